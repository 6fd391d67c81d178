fn main() {
    if cfg!(feature = "loud") {
        println!("HELLO FROM TOOL");
    } else {
        println!("hello from tool");
    }
}
