package provenance

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
)

// refRoot is an independent formulation of the rule: split at the largest
// power of two below n (a left-balanced tree), which is what promoting the
// odd last node level by level amounts to.
func refRoot(h [][32]byte) [32]byte {
	if len(h) == 1 {
		return h[0]
	}
	k := 1
	for k*2 < len(h) {
		k *= 2
	}
	l, r := refRoot(h[:k]), refRoot(h[k:])
	return sha256.Sum256(append(l[:], r[:]...))
}

func leafHash(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func pair(a, b [32]byte) [32]byte { return sha256.Sum256(append(a[:], b[:]...)) }

func hx(b [32]byte) string { return hex.EncodeToString(b[:]) }

func TestMerkleRootSmall(t *testing.T) {
	a, b, c := leafHash("a"), leafHash("b"), leafHash("c")
	tests := []struct {
		leaves []string
		want   string
	}{
		{[]string{"a"}, hx(a)},
		{[]string{"a", "b"}, hx(pair(a, b))},
		// odd last node promoted unchanged, not duplicated
		{[]string{"a", "b", "c"}, hx(pair(pair(a, b), c))},
	}
	for _, tc := range tests {
		got, err := MerkleRoot(tc.leaves)
		if err != nil || got != tc.want {
			t.Errorf("MerkleRoot(%q) = %s, %v; want %s", tc.leaves, got, err, tc.want)
		}
	}
}

func TestMerkleRootSizes(t *testing.T) {
	// Golden roots pin the rule; refRoot cross-checks it independently.
	golden := map[int]string{
		1:  "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
		2:  "993e4dbc9945edea3427b1a07cfa14ed7a083012bb554bee24320d4ed7c86f08",
		3:  "76336a05771460db3729c221a2a6816e15cf53fb596c01044adf17a2d4fc36d0",
		7:  "6e8a644b56356f0846b5364233935b12f40242ca674c5fbe938687da54d0f66d",
		58: "ca2b5dff67b6d792266c65d1993c2982e319ebc395f39423d9aa7c71ba1803e3",
	}
	for _, n := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 58, 311} {
		leaves := make([]string, n)
		hashes := make([][32]byte, n)
		for i := range leaves {
			leaves[i] = string(rune('a'+i%26)) + fmt.Sprint(i/26)
			if n == 1 {
				leaves[i] = "a"
			}
			hashes[i] = leafHash(leaves[i])
		}
		got, err := MerkleRoot(leaves)
		if err != nil {
			t.Fatal(err)
		}
		if want := hx(refRoot(hashes)); got != want {
			t.Errorf("%d leaves: got %s, reference %s", n, got, want)
		}
		if g, ok := golden[n]; ok && g != "" && g != got {
			t.Errorf("%d leaves: got %s, golden %s", n, got, g)
		}
	}
}

func TestMerkleRootEmpty(t *testing.T) {
	if _, err := MerkleRoot(nil); !errors.Is(err, ErrNoLeaves) {
		t.Fatalf("err = %v, want ErrNoLeaves", err)
	}
}
