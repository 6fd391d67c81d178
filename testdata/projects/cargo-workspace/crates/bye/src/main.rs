fn main() {
    let name = std::env::args().nth(1).expect("usage: bye NAME");
    println!("{}", greet::greeting("Goodbye", &name));
}
