// Command nodeps is a module without dependencies and so without go.sum:
// go.mod stands in as the lockfile.
package main

import "fmt"

func main() { fmt.Println("no dependencies") }
