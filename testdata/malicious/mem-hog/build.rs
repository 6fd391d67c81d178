// Malicious build script: allocate and touch 10 GiB of memory.
fn main() {
    const GIB: usize = 1 << 30;
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for i in 0..10 {
        // vec![1; n] writes every byte, so every page is really used.
        blocks.push(vec![1u8; GIB]);
        eprintln!("allocated {} GiB", i + 1);
    }
    println!("cargo:warning=LEAK: allocated {} GiB", blocks.len());
}
