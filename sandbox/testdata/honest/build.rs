// An honest build script: generates code into OUT_DIR from a file of the
// project, as real build scripts do. Sizes the generated code from
// KETTLE_HONEST_SIZE so the benchmark can make a build of useful length.
use std::fmt::Write;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KETTLE_HONEST_SIZE");
    let n: usize = std::env::var("KETTLE_HONEST_SIZE").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    let mut code = String::new();
    for i in 0..n {
        writeln!(
            code,
            "#[inline(never)] pub fn f{i}(x: u64) -> u64 {{ let mut v: Vec<u64> = (0..(x % 64 + {i})).collect(); \
             v.sort_by(|a, b| b.cmp(a)); v.iter().fold({i}u64, |a, b| a.wrapping_mul(31).wrapping_add(*b)) }}"
        )
        .unwrap();
    }
    write!(code, "pub fn all(x: u64) -> u64 {{ 0").unwrap();
    for i in 0..n {
        write!(code, " ^ f{i}(x)").unwrap();
    }
    writeln!(code, " }}").unwrap();
    let out = std::env::var("OUT_DIR").unwrap();
    std::fs::write(format!("{out}/generated.rs"), code).unwrap();
}
