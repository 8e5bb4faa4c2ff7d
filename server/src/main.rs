//! `shoal-collector`: placeholder binary until the collector lands (issue "Signed convergence reports").

fn main() {
    eprintln!("shoal-collector: not built yet; see the project's issues");
    std::process::exit(1);
}
