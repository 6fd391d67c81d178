// Malicious build script: write outside the project (next to it, into the
// system, into a stand-in server data directory). Any success is a leak.
fn main() {
    println!("cargo:rerun-if-changed=attack.conf");
    let conf = std::fs::read_to_string("attack.conf").unwrap_or_default();
    let mut errors = Vec::new();
    let mut wrote = Vec::new();
    for p in conf.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match std::fs::write(p, b"pwned by build.rs\n") {
            Ok(()) => wrote.push(p.to_string()),
            Err(e) => errors.push(format!("{p}: {e}")),
        }
    }
    if !wrote.is_empty() {
        println!("cargo:warning=LEAK: wrote {}", wrote.join(", "));
        return;
    }
    panic!("kettle-malicious: nothing writable: {}", errors.join("; "));
}
