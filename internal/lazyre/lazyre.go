// Package lazyre is a regular expression compiled on first use instead of at
// package init. Every kettle subcommand links every package, so a
// package-level regexp.MustCompile costs each process (kettle verify,
// kettle version) its compile time even when nothing ever matches against it
// (issue 16 point 5).
package lazyre

import (
	"regexp"
	"sync"
)

// Regexp is a regexp.Regexp compiled the first time it is used. Like
// regexp.MustCompile, an invalid expression panics, at first use.
type Regexp struct {
	re func() *regexp.Regexp
}

// New returns a Regexp for expr; nothing is compiled yet.
func New(expr string) *Regexp {
	return &Regexp{re: sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })}
}

// Regexp returns the compiled expression.
func (r *Regexp) Regexp() *regexp.Regexp { return r.re() }

func (r *Regexp) MatchString(s string) bool { return r.re().MatchString(s) }

func (r *Regexp) FindStringSubmatch(s string) []string { return r.re().FindStringSubmatch(s) }

func (r *Regexp) FindAllString(s string, n int) []string { return r.re().FindAllString(s, n) }

func (r *Regexp) ReplaceAllString(src, repl string) string { return r.re().ReplaceAllString(src, repl) }

func (r *Regexp) String() string { return r.re().String() }
