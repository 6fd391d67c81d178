// Command hello prints a name-based UUID: a main package at the module root
// whose dependency comes from the Go module proxy.
package main

import (
	"fmt"

	"example.com/hello/internal/greet"
	"github.com/google/uuid"
)

func main() {
	fmt.Println(greet.Hello("kettle"), uuid.NewSHA1(uuid.NameSpaceURL, []byte("kettle")))
}
