//! `shoal-dist DIR`: writes the agent's man pages (`DIR/man/shoal-agent.1` and one page per
//! subcommand, `shoal-agent-init.1`, ...) and shell completions (`DIR/completions/`: bash, zsh,
//! fish) from its clap definition, for `scripts/package.sh`. Generated, never hand-written, so
//! they cannot drift from `--help`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> anyhow::Result<()> {
    let out: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: shoal-dist OUT_DIR")?;
    let command = shoal_agent::cli::Cli::command();
    let man = out.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("create {}", man.display()))?;
    write_man_pages(&command, &man)?;
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("create {}", completions.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut command = command.clone();
        clap_complete::generate_to(shell, &mut command, "shoal-agent", &completions)
            .with_context(|| format!("write the {shell} completions"))?;
    }
    Ok(())
}

/// The top page and one per visible subcommand (`shoal-agent-init.1`), as git does.
fn write_man_pages(command: &clap::Command, dir: &Path) -> anyhow::Result<()> {
    let command = command.clone().version(env!("CARGO_PKG_VERSION"));
    clap_mangen::generate_to(command, dir).with_context(|| format!("write {}", dir.display()))
}
