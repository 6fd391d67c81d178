fn main() {
    println!("extra");
}
