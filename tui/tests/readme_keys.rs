//! README's key table is generated from the TUI's key table
//! (`webhookd_tui::keymap`), so the documented keys are the keys that work.

use webhookd_tui::keymap;

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
const HEADER: &str = "| keys | where | does |";

/// The rows of the key table in README's "Terminal UI" section.
fn readme_rows(readme: &str) -> Vec<String> {
    let Some((_, section)) = readme.split_once("\n## Terminal UI\n") else {
        panic!("README.md has no \"## Terminal UI\" section");
    };
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut lines = section.lines().skip_while(|l| l.trim() != HEADER);
    assert!(
        lines.next().is_some(),
        "README.md's Terminal UI section has no table headed {HEADER:?}"
    );
    lines
        .skip_while(|l| l.starts_with("|--") || l.starts_with("| --"))
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_end().to_string())
        .collect()
}

#[test]
fn readme_key_table_matches_the_keymap() {
    let readme = std::fs::read_to_string(README).expect("reading README.md");
    let expected = keymap::readme_rows();
    assert!(
        readme_rows(&readme) == expected,
        "README.md's key table (section \"Terminal UI\") differs from tui/src/keymap.rs; \
         replace its rows with:\n\n{HEADER}\n|---|---|---|\n{}\n",
        expected.join("\n")
    );
}

#[test]
fn the_table_covers_every_block() {
    let rows = keymap::readme_rows();
    for block in keymap::KEYMAP {
        assert!(
            rows.iter()
                .any(|r| r.contains(&format!("| {} |", block.title))),
            "no README row for {}",
            block.title
        );
    }
    for key in ["`c`", "`s`", "`Ctrl-U`", "`Ctrl-C`", "`space`"] {
        assert!(
            rows.iter().any(|r| r.starts_with(&format!("| {key} |"))),
            "{key}"
        );
    }
}
