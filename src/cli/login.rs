//! `imgbuild login`: check the credentials with the registry, then save
//! them in Docker's config.json as `docker login` does.

use super::args::LoginArgs;
use super::prepare::read_password_stdin;
use crate::registry::{Keychain, RegistryClient, TransportOptions};
use anyhow::{bail, Result};

pub(super) fn cmd_login(args: LoginArgs) -> Result<()> {
    if !args.password_stdin {
        bail!("imgbuild login reads the password from standard input only: pass --password-stdin (a password on the command line would end up in shell history)");
    }
    let password = read_password_stdin()?;
    let registry = crate::reference::normalise_registry(&args.registry);
    let keychain = Keychain::from_env()
        .with_explicit(&args.username, password.clone())
        .explicit_only_for(&registry);
    let options = TransportOptions {
        ca_files: args.ca_files.clone(),
        insecure_registries: args.insecure_registries.clone(),
        ..TransportOptions::default()
    };
    let client = RegistryClient::new(options, keychain)?;
    client.check_login(&registry)?;
    let file = crate::registry::login(&registry, &args.username, &password, None)?;
    eprintln!("Login Succeeded (credentials saved in {})", file.display());
    Ok(())
}
