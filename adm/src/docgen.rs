//! `repadm completions SHELL` and `repadm man`: shell completion scripts and man pages
//! generated from the clap definition, so they always list exactly the commands repadm has.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<i32> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "repadm", &mut std::io::stdout());
    Ok(0)
}

/// repadm(8) on stdout, or repadm.8 plus repadm-COMMAND.8 for every subcommand in `dir`.
pub fn man(dir: Option<&Path>) -> anyhow::Result<i32> {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        let mut out = Vec::new();
        page(cmd).render(&mut out).context("render the man page")?;
        use std::io::Write;
        std::io::stdout()
            .write_all(&out)
            .context("write the man page")?;
        return Ok(0);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Building gives every subcommand its display name (`repadm-up`), the page's name.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    for sub in cmd.get_subcommands() {
        let man = page(sub.clone());
        let file = man.get_filename();
        write_page(dir, &file, man)?;
    }
    write_page(dir, "repadm.8", page(cmd))?;
    Ok(0)
}

fn page(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd)
        .section("8")
        .manual("rep")
        .source(format!("rep {}", env!("CARGO_PKG_VERSION")))
}

fn write_page(dir: &Path, file: &str, man: clap_mangen::Man) -> anyhow::Result<()> {
    let mut out = Vec::new();
    man.render(&mut out)
        .with_context(|| format!("render {file}"))?;
    let path = dir.join(file);
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))
}
