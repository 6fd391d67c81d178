// Command kettle-greet is a second main package with a name of its own.
package main

import (
	"fmt"

	"example.com/hello/internal/greet"
)

func main() { fmt.Println(greet.Hello("greet")) }
