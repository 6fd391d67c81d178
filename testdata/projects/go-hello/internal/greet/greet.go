// Package greet is a library package: compiled, but not an artifact.
package greet

// Hello greets name.
func Hello(name string) string { return "hello, " + name }
