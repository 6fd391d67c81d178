// Command hello shares its binary name with the module root's main package,
// so kettle names it after its directory: cmd-hello.
package main

import "fmt"

func main() { fmt.Println("hello from cmd/hello") }
