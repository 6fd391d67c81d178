package igvm

import (
	"os"
	"path/filepath"
	"testing"
)

//go:generate go run ./testdata/gen

// sevSNPMeasureVectors are the SEV-SNP launch digests of
// virtee/sev-snp-measure's tests/test_guest.py (test_<name>), some measured
// on hardware. testdata/snp/<name>.igvm expresses each case's page list
// (see testdata/gen). The SNP-SVSM cases are left out: their fixtures are
// 4.8 MB of firmware. The SEV and SEV-ES cases are SHA-256 digests of
// another scheme.
var sevSNPMeasureVectors = map[string]string{
	"snp_ovmf_hash_gen_default":                        "329c8ce0972ae52343b64d34a434a86f245dfd74f5ed7aae15d22efc78fb9683632b9b50e4e1d7fa41179ef98a7ef198",
	"snp_ovmf_hash_gen_feature_snp_only":               "ddc5224521617a536ee7ce9dd6224d1b58a8d4fda1c741f3ac99fc4bfa04ba6e9fc98646d4a07a9079397fa3852819b5",
	"snp_ovmf_hash_full_default":                       "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977",
	"snp_ovmf_hash_full_feature_snp_only":              "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa",
	"snp_ec2_default":                                  "0ce9ccc06bab55eebe8abc234f3df6514883977a68a591b71052498ab52b2f1aa415db338033946ef93aa8278c0d67fb",
	"snp_ec2_feature_snp_only":                         "0883bd0eeb716e65b7b977a321c278d1e51b33b5c655fab985443bbcc65c086b9c15e8a0bd8811050dec7e24964e5056",
	"snp_gce_default":                                  "5da7106cf14cf46b1725ebab123eb9e53bd46a1e9f400cd0c08e7827b04b688ea8b4e403c8404efed4397ea5d5d0722e",
	"snp_gce_with_multiple_vcpus_default":              "5c5debf100fc339f90276e761ee1f1658d08922c3b20e2a2e6c7a6c3370b2452a15a00eae11886a93d6fd1e7ab81e29d",
	"snp_default":                                      "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977",
	"snp_guest_feature_snp_only":                       "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa",
	"snp_without_kernel_default":                       "e1e1ca029dd7973ab9513295be68198472dcd4fc834bd9af9b63f6e8a1674dbf281a9278a4a2ebe0eed9f22adbcd0e2b",
	"snp_without_kernel_feature_snp_only":              "19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d",
	"snp_with_multiple_vcpus_default":                  "4953b1fb416fa874980e8442b3706d345926d5f38879134e00813c5d7abcbe78eafe7b422907be0b4698e2414a631942",
	"snp_with_multiple_vcpus_feature_snp_only":         "5061fffb019493a903613d56d54b94912a1a2f9e4502385f5c194616753720a92441310ba6c4933de877c36e23046ad5",
	"snp_with_ovmfx64_without_default":                 "28797ae0afaba4005a81e629acebfb59e6687949d6be44007cd5506823b0dd66f146aaae26ff291eed7b493d8a64c385",
	"snp_with_ovmfx64_without_kernel_feature_snp_only": "da0296de8193586a5512078dcd719eccecbd87e2b825ad4148c44f665dc87df21e5b49e21523a9ad993afdb6a30b4005",
}

func TestSevSNPMeasureVectors(t *testing.T) {
	files, _ := filepath.Glob("testdata/snp/*.igvm")
	if len(files) != len(sevSNPMeasureVectors) {
		t.Errorf("%d files in testdata/snp, %d vectors (run go generate)", len(files), len(sevSNPMeasureVectors))
	}
	for name, want := range sevSNPMeasureVectors {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "snp", name+".igvm"))
			if err != nil {
				t.Fatal(err)
			}
			f, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			m, err := f.SNPLaunchDigest(Direct)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Digest.String(); got != want {
				t.Errorf("launch digest\n got %s\nwant %s", got, want)
			}
			// The QEMU IGVM loader measures data-less pages as NORMAL: a
			// different digest for the same file whenever it has zero pages.
			q, err := f.SNPLaunchDigest(QEMU)
			if err != nil {
				t.Fatal(err)
			}
			if q.Digest == m.Digest {
				t.Errorf("qemu and direct loaders agree; the file should have zero pages")
			}
		})
	}
}
