use clap::Parser;

fn main() {
    let cli = imgbuild::cli::Cli::parse();
    if let Err(e) = imgbuild::cli::run(cli) {
        eprintln!("error: {}", imgbuild::cli::error_line(&e));
        std::process::exit(1);
    }
}
