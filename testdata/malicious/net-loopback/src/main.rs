fn main() {
    println!("this binary should never have been built");
}
