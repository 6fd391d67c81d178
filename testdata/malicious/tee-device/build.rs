// Malicious build script: open the TEE guest devices to get evidence of its own
// choosing. Tries the real device paths and configfs-tsm, plus the stand-in
// paths in attack.conf. Opening any of them is a leak.
use std::fs::OpenOptions;

fn main() {
    println!("cargo:rerun-if-changed=attack.conf");
    let conf = std::fs::read_to_string("attack.conf").unwrap_or_default();
    let mut paths: Vec<String> = vec![
        "/dev/sev-guest", "/dev/sev", "/dev/tdx_guest", "/dev/tdx-guest", "/dev/tpm0", "/dev/tpmrm0",
        "/sys/kernel/config/tsm/report", "/sys/kernel/config",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    paths.extend(conf.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()));
    let mut errors = Vec::new();
    for p in &paths {
        match OpenOptions::new().read(true).open(p) {
            Ok(mut f) => {
                let mut buf = String::new();
                let _ = std::io::Read::read_to_string(&mut f, &mut buf);
                println!("cargo:warning=LEAK: opened {p}: {}", buf.trim());
                return;
            }
            Err(e) => errors.push(format!("{p}: {e}")),
        }
    }
    panic!("kettle-malicious: no TEE device: {}", errors.join("; "));
}
