//! Man pages from the clap definitions, in the sections man-pages(7) names.
//!
//! clap_mangen renders NAME, SYNOPSIS, DESCRIPTION, OPTIONS and SUBCOMMANDS; what a subcommand's
//! `after_help` says would land in one section called EXTRA, with its tables refilled by roff.
//! Here that text is split by its headings (`EXIT CODES:`, `ENVIRONMENT:`, `EXAMPLES:`,
//! `JSON (...):`) into EXIT STATUS, ENVIRONMENT, EXAMPLES and JSON OUTPUT, indented blocks stay
//! as written (`.nf`), paragraphs without a heading continue the DESCRIPTION, and every page
//! ends with SEE ALSO. `--help` shows the same text as it is.

use std::io::Write;

/// The sections made from `after_help`, in the order man-pages(7) gives them.
const ORDER: [&str; 4] = ["JSON OUTPUT", "EXIT STATUS", "ENVIRONMENT", "EXAMPLES"];

/// A page's after_help, split: paragraphs for DESCRIPTION, and (section, blocks) in `ORDER`.
struct Extra {
    description: Vec<String>,
    sections: Vec<(&'static str, Vec<String>)>,
}

/// The section a heading names, or None for prose.
fn section_of(heading: &str) -> Option<&'static str> {
    match heading {
        "EXIT CODES" => Some("EXIT STATUS"),
        "ENVIRONMENT" => Some("ENVIRONMENT"),
        "EXAMPLES" => Some("EXAMPLES"),
        "JSON" => Some("JSON OUTPUT"),
        _ => None,
    }
}

/// `HEADING:` or `HEADING (qualifier):` at the start of a paragraph: the section and the text
/// after the colon (the qualifier kept in front of it).
fn heading(paragraph: &str) -> Option<(&'static str, String)> {
    let (head, rest) = paragraph.split_once(':')?;
    let (word, qualifier) = match head.split_once(" (") {
        Some((w, q)) => (w, Some(q.trim_end_matches(')'))),
        None => (head, None),
    };
    let section = section_of(word)?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    Some(match qualifier {
        Some(q) => (section, format!("{q}: {rest}")),
        None => (section, rest.to_owned()),
    })
}

fn split(after_help: &str) -> Extra {
    let mut extra = Extra {
        description: Vec::new(),
        sections: Vec::new(),
    };
    for paragraph in after_help.split("\n\n").map(str::trim_end) {
        match heading(paragraph) {
            Some((section, text)) => {
                let text = text.trim_start_matches('\n').to_owned();
                match extra.sections.iter_mut().find(|(s, _)| *s == section) {
                    Some((_, blocks)) => blocks.push(text),
                    None => extra.sections.push((section, vec![text])),
                }
            }
            None => extra.description.push(paragraph.to_owned()),
        }
    }
    extra
        .sections
        .sort_by_key(|(s, _)| ORDER.iter().position(|o| o == s));
    extra
}

/// Text for roff: backslashes and hyphens as roff wants them, and no line that roff would take
/// for a request.
fn escape(line: &str) -> String {
    let s = line.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// A block with indented lines (tables, commands) is kept as written; prose is filled.
fn write_block(w: &mut dyn Write, block: &str) -> std::io::Result<()> {
    writeln!(w, ".PP")?;
    if block.lines().any(|l| l.starts_with("  ")) {
        writeln!(w, ".nf")?;
        for line in block.lines() {
            writeln!(w, "{}", escape(line))?;
        }
        writeln!(w, ".fi")
    } else {
        for line in block.lines() {
            writeln!(w, "{}", escape(line.trim_start()))?;
        }
        Ok(())
    }
}

/// One page: clap_mangen's sections, then those split from after_help, then SEE ALSO.
fn render(cmd: &clap::Command, see_also: &[String], w: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let extra = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(|t| split(&t.to_string()));
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if let Some(extra) = &extra {
        for paragraph in &extra.description {
            write_block(w, paragraph)?;
        }
    }
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(w)?;
    }
    if let Some(extra) = &extra {
        for (section, blocks) in &extra.sections {
            writeln!(w, ".SH \"{section}\"")?;
            for block in blocks {
                write_block(w, block)?;
            }
        }
    }
    writeln!(w, ".SH \"SEE ALSO\"")?;
    let refs: Vec<String> = see_also
        .iter()
        .map(|r| match r.split_once('(') {
            Some((name, section)) => format!("\\fB{}\\fR({section}", escape(name)),
            None => escape(r),
        })
        .collect();
    writeln!(w, "{}", refs.join(", "))
}

/// The pages other pages point to, beyond gracekill's own.
const SYSTEM_PAGES: [&str; 4] = [
    "systemd-run(1)",
    "timeout(1)",
    "cgroups(7)",
    "pidfd_send_signal(2)",
];

/// `gracekill(1)` and one page per visible subcommand (`gracekill-stop(1)`, ...), with their
/// file names: `(file name, roff)`.
pub fn pages(cmd: clap::Command) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    // Builds the subcommands' display names (gracekill-stop), which name their pages.
    cmd.build();
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let name_of = |c: &clap::Command| {
        c.get_display_name()
            .unwrap_or_else(|| c.get_name())
            .to_owned()
    };
    let top = name_of(&cmd);
    let mut out = Vec::new();
    let mut see: Vec<String> = subs.iter().map(|s| format!("{}(1)", name_of(s))).collect();
    see.extend(SYSTEM_PAGES.iter().map(|s| (*s).to_owned()));
    let mut page = Vec::new();
    render(&cmd, &see, &mut page)?;
    out.push((format!("{top}.1"), page));
    for sub in &subs {
        let mut see = vec![format!("{top}(1)")];
        see.extend(
            subs.iter()
                .filter(|s| s.get_name() != sub.get_name())
                .map(|s| format!("{}(1)", name_of(s))),
        );
        see.extend(SYSTEM_PAGES.iter().map(|s| (*s).to_owned()));
        let mut page = Vec::new();
        render(sub, &see, &mut page)?;
        out.push((format!("{}.1", name_of(sub)), page));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_become_sections_and_prose_stays_in_the_description() {
        let e = split(
            "TASK is a cgroup.\n\nJSON (--json): {a, b}\n\nEXIT CODES: 0 ok; 2 bad\n\n\
             ENVIRONMENT:\n  X   what x does\n\nEXAMPLES:\n  gk stop web",
        );
        assert_eq!(e.description, ["TASK is a cgroup."]);
        let names: Vec<&str> = e.sections.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            names,
            ["JSON OUTPUT", "EXIT STATUS", "ENVIRONMENT", "EXAMPLES"]
        );
        assert_eq!(e.sections[0].1, ["--json: {a, b}"]);
        assert_eq!(e.sections[1].1, ["0 ok; 2 bad"]);
        assert_eq!(e.sections[2].1, ["  X   what x does"]);
    }

    #[test]
    fn roff_escapes() {
        assert_eq!(escape(".start"), "\\&.start");
        assert_eq!(escape("--grace a\\b"), "\\-\\-grace a\\eb");
    }
}
