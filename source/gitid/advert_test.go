package gitid

import (
	"strings"
	"testing"
)

func TestAdvertisement(t *testing.T) {
	c1 := "1111111" + strings.Repeat("a", 33)
	c2 := "1111111" + strings.Repeat("b", 33)
	tagObj := strings.Repeat("c", 40)
	out := strings.Join([]string{
		c1 + "\tHEAD",
		c1 + "\trefs/heads/main",
		tagObj + "\trefs/tags/v1",
		c2 + "\trefs/tags/v1^{}",
		c2 + "\trefs/heads/deadbee",
		"nothex\trefs/heads/x",
		c1 + "\trefs/heads/bad..name",
		c1 + " refs/heads/no-tab",
		"",
	}, "\n")
	a := ParseAdvertisement(out)
	if got := a.Named("main"); got != c1 {
		t.Errorf("main = %q", got)
	}
	if got := a.Named("v1"); got != c2 {
		t.Errorf("annotated v1 = %q, want its peeled commit", got)
	}
	if got := a.Named("deadbee"); got != c2 {
		t.Errorf("deadbee = %q", got)
	}
	if got := a.Named("bad..name"); got != "" {
		t.Errorf("invalid ref name accepted: %q", got)
	}
	if got := a.CommitsWithPrefix("1111111"); len(got) != 2 {
		t.Errorf("prefix 1111111 = %v, want both commits", got)
	}
	if got := a.CommitsWithPrefix("1111111A"); len(got) != 1 || got[0] != c1 {
		t.Errorf("prefix 1111111A = %v", got)
	}
	for _, c := range a.CommitsWithPrefix("") {
		if c == tagObj {
			t.Error("a tag object is offered as a commit")
		}
	}
}

// FuzzAdvertisement: the remote's ls-remote output never panics the parser,
// and whatever it yields is a valid object id.
func FuzzAdvertisement(f *testing.F) {
	f.Add(strings.Repeat("a", 40) + "\trefs/heads/main\n" + strings.Repeat("b", 64) + "\trefs/tags/v1^{}\n")
	f.Add("\t\n^{}\trefs/tags/\x00\n")
	f.Fuzz(func(t *testing.T, out string) {
		a := ParseAdvertisement(out)
		for _, c := range a.CommitsWithPrefix("") {
			if _, ok := formatOf(c); !ok {
				t.Fatalf("invalid id %q", c)
			}
		}
		_ = a.Named("main")
	})
}
