package provenance

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
)

// ErrNoLeaves is returned by MerkleRoot for an empty leaf list (the peer
// fails the same way: "Merkle tree root calculation failed!").
var ErrNoLeaves = errors.New("merkle root of zero leaves")

// MerkleRoot returns the hex input Merkle root of the leaf strings with the
// peer's rule (rs_merkle from_leaves, reference §D.2): each leaf is
// sha256(leaf string), a parent is sha256(left ‖ right), and an odd last node
// is promoted unchanged to the next level.
func MerkleRoot(leaves []string) (string, error) {
	if len(leaves) == 0 {
		return "", ErrNoLeaves
	}
	level := make([][32]byte, len(leaves))
	for i, l := range leaves {
		level[i] = sha256.Sum256([]byte(l))
	}
	var buf [64]byte
	for len(level) > 1 {
		next := level[:0:0]
		for i := 0; i+1 < len(level); i += 2 {
			copy(buf[:32], level[i][:])
			copy(buf[32:], level[i+1][:])
			next = append(next, sha256.Sum256(buf[:]))
		}
		if len(level)%2 == 1 {
			next = append(next, level[len(level)-1])
		}
		level = next
	}
	return hex.EncodeToString(level[0][:]), nil
}
