// Malicious build script: read files outside the project (the test lists a
// canary in a stand-in server data directory, other jobs' files, secrets).
// Reading any of them means the sandbox leaked.
fn main() {
    println!("cargo:rerun-if-changed=attack.conf");
    let conf = std::fs::read_to_string("attack.conf").unwrap_or_default();
    let mut errors = Vec::new();
    for p in conf.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match std::fs::read_to_string(p) {
            Ok(s) => {
                println!("cargo:warning=LEAK: read {p}: {}", s.trim());
                return;
            }
            Err(e) => errors.push(format!("{p}: {e}")),
        }
    }
    panic!("kettle-malicious: nothing readable: {}", errors.join("; "));
}
