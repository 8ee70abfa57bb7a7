//! The one key table: every binding, where it applies, the command it maps
//! to and the words the help overlay, the footer and README use for it.
//!
//! Nothing else matches on key codes. [`App`](crate::app::App) asks
//! [`command`] what a key means in the places in front (an overlay, the
//! screen, then [`Where::Everywhere`]) and hands the [`Cmd`] to that screen.
//! The footer ([`footer`]), the help overlay ([`help_blocks`]) and README's
//! key table ([`readme_rows`], compared by a test) are generated from the
//! same [`KEYMAP`], so they cannot drift apart from what the keys do.
//!
//! A new screen adds one [`Block`] to [`KEYMAP`] (in `keymap/table.rs`)
//! and its commands to [`Cmd`]; its footer and help section follow.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::screens::confirm::Ask;
use crate::screens::recover::RecoverStage;
use crate::screens::{Screen, Tab};

mod table;

pub use table::KEYMAP;

/// What a key asks for. Each screen handles the commands its block maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// Switch to a top-level screen.
    Show(Tab),
    /// The next top-level screen.
    NextTab,
    /// The previous top-level screen.
    PrevTab,
    /// Open the help overlay.
    Help,
    /// Close the screen in front.
    Back,
    /// Quit.
    Quit,
    /// Quit, also from forms and dialogs (checked before anything else).
    ForceQuit,
    /// Move the selection up one row.
    Up,
    /// Move the selection down one row.
    Down,
    /// Move the selection up one page.
    PageUp,
    /// Move the selection down one page.
    PageDown,
    /// Select the first row.
    Top,
    /// Select the last row.
    Bottom,
    /// Open the selected row.
    Open,
    /// Reload what the screen shows.
    Refresh,
    /// New subscription.
    New,
    /// Edit the subscription.
    Edit,
    /// Delete the subscription (asks first).
    Delete,
    /// Disable the subscription, or enable it when disabled (asks first).
    ToggleDisabled,
    /// Open the webhook's subscription.
    OpenSubscription,
    /// Deliver the webhook again (asks first).
    Redeliver,
    /// Recover the subscription's webhooks of a time window (a dialog).
    Recover,
    /// The Failed screen, filtered to the subscription.
    ShowFailed,
    /// Give the filter line the keyboard.
    Filter,
    /// Leave the filter line, keeping the filter.
    FilterDone,
    /// Empty the filter.
    ClearFilter,
    /// A typed character (the key event carries it).
    Type,
    /// Delete the character before the cursor.
    Erase,
    /// Empty the focused field.
    ClearField,
    /// Focus the next field.
    NextField,
    /// Focus the previous field.
    PrevField,
    /// Submit the form.
    Save,
    /// Leave the form or dialog without doing anything.
    Cancel,
    /// Pause or resume the live tail.
    TogglePause,
    /// Next outcome filter of the live tail.
    CycleFilter,
    /// Empty the live tail.
    Clear,
    /// Follow the newest attempt again.
    Follow,
    /// Close the help overlay.
    CloseHelp,
    /// Answer "yes" in a dialog.
    Confirm,
}

/// A key press, as the table writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chord {
    /// This key with any modifiers (capitals arrive with Shift).
    Key(KeyCode),
    /// Ctrl and this (lower-case) letter.
    Ctrl(char),
    /// Any printable character typed without Ctrl or Alt.
    Text,
}

impl Chord {
    /// True when `key` is this chord.
    pub fn matches(self, key: &KeyEvent) -> bool {
        let ctrl_or_alt = key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT);
        match self {
            Chord::Key(code) => key.code == code,
            Chord::Ctrl(c) => {
                key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char(c)
            }
            Chord::Text => matches!(key.code, KeyCode::Char(_)) && !ctrl_or_alt,
        }
    }

    /// The name of the key as labels write it: `Enter`, `↑`, `space`,
    /// `Ctrl-U`, `type` (for [`Chord::Text`]).
    pub fn name(self) -> String {
        match self {
            Chord::Key(code) => match code {
                KeyCode::Char(' ') => "space".to_string(),
                KeyCode::Char(c) => c.to_string(),
                KeyCode::Up => "↑".to_string(),
                KeyCode::Down => "↓".to_string(),
                KeyCode::Enter => "Enter".to_string(),
                KeyCode::Esc => "Esc".to_string(),
                KeyCode::Tab => "Tab".to_string(),
                KeyCode::BackTab => "⇧Tab".to_string(),
                KeyCode::Backspace => "Backspace".to_string(),
                KeyCode::PageUp => "PgUp".to_string(),
                KeyCode::PageDown => "PgDn".to_string(),
                KeyCode::Home => "Home".to_string(),
                KeyCode::End => "End".to_string(),
                other => format!("{other:?}"),
            },
            Chord::Ctrl(c) => format!("Ctrl-{}", c.to_ascii_uppercase()),
            Chord::Text => "type".to_string(),
        }
    }
}

/// One footer hint: a short key label and a word or two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    /// Keys as the footer writes them (`⏎`, `Tab/1-2`).
    pub keys: &'static str,
    /// What they do, in the footer's words.
    pub does: &'static str,
}

/// One line of the key table: keys, what they do, and their commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The keys as the help overlay and README write them; every word is
    /// the [`Chord::name`] of a chord in `map` and the other way round.
    pub keys: &'static str,
    /// What they do (help overlay and README).
    pub does: &'static str,
    /// The key presses and the command each one means.
    pub map: &'static [(Chord, Cmd)],
    /// What the footer shows for this line, often nothing.
    pub hints: &'static [Hint],
    /// Listed in the help overlay (README lists every line).
    pub in_help: bool,
}

impl Binding {
    const fn hints(mut self, hints: &'static [Hint]) -> Binding {
        self.hints = hints;
        self
    }

    /// Left out of the help overlay (which has no room), kept in README.
    const fn unlisted(mut self) -> Binding {
        self.in_help = false;
        self
    }

    /// The command `key` means on this line, if any.
    fn command(&self, key: &KeyEvent) -> Option<Cmd> {
        self.map
            .iter()
            .find(|(chord, _)| chord.matches(key))
            .map(|&(_, cmd)| cmd)
    }
}

/// Where a block of bindings applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    /// Every screen except forms (the fallback after the screen's block).
    Everywhere,
    /// One screen.
    Screen(Screen),
    /// The subscription list while its filter line has the keyboard.
    FilterLine,
    /// The help overlay.
    HelpOverlay,
    /// A y/n dialog (delete, disable, enable, redeliver).
    Dialog(Ask),
    /// The recover dialog, at one of its stages.
    Recover(RecoverStage),
}

/// The bindings of one place, in the order help and footer list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Where they apply.
    pub place: Where,
    /// Heading in the help overlay, "where" column in README.
    pub title: &'static str,
    /// Whether the help overlay has a section for this block.
    pub in_help: bool,
    /// The bindings.
    pub bindings: &'static [Binding],
    /// Bindings of other blocks that also work here and whose hints the
    /// footer shows after this block's own.
    pub footer_also: &'static [Binding],
}

/// The block of `place`.
pub fn block(place: Where) -> Option<&'static Block> {
    KEYMAP.iter().find(|b| b.place == place)
}

/// What `key` means in `place`, if anything.
pub fn command(place: Where, key: &KeyEvent) -> Option<Cmd> {
    block(place)?.bindings.iter().find_map(|b| b.command(key))
}

/// The name of the first key that means `cmd` in `place`.
pub fn key_name(place: Where, cmd: Cmd) -> Option<String> {
    block(place)?
        .bindings
        .iter()
        .flat_map(|b| b.map)
        .find(|&&(_, c)| c == cmd)
        .map(|&(chord, _)| chord.name())
}

/// The footer hints of `place`, each with the first command of its
/// binding (so a screen can put live state into the words).
pub fn footer(place: Where) -> Vec<(Cmd, Hint)> {
    let Some(block) = block(place) else {
        return Vec::new();
    };
    block
        .bindings
        .iter()
        .chain(block.footer_also)
        .filter_map(|b| Some((b.map.first()?.1, b.hints)))
        .flat_map(|(cmd, hints)| hints.iter().map(move |&h| (cmd, h)))
        .collect()
}

/// The blocks with a section in the help overlay, in order.
pub fn help_blocks() -> impl Iterator<Item = &'static Block> {
    KEYMAP.iter().filter(|b| b.in_help)
}

/// The rows of README's key table (`| keys | where | does |`), every
/// binding of every block.
pub fn readme_rows() -> Vec<String> {
    KEYMAP
        .iter()
        .flat_map(|block| {
            block
                .bindings
                .iter()
                .map(move |b| format!("| `{}` | {} | {} |", b.keys, block.title, b.does))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words of a label: split on blanks, a lone `/` between keys is a
    /// separator, arrows written together (`↑↓`) are one word each.
    fn words(label: &str) -> Vec<String> {
        if label == "/" {
            return vec!["/".to_string()];
        }
        let mut out = Vec::new();
        for word in label.split_whitespace().filter(|w| *w != "/") {
            if word.chars().all(|c| "↑↓".contains(c)) {
                out.extend(word.chars().map(String::from));
            } else {
                out.push(word.to_string());
            }
        }
        out
    }

    #[test]
    fn labels_name_exactly_the_mapped_keys() {
        for block in KEYMAP {
            for b in block.bindings.iter().chain(block.footer_also) {
                let mut labelled: Vec<String> =
                    words(b.keys).iter().map(|w| w.to_lowercase()).collect();
                let mut mapped: Vec<String> =
                    b.map.iter().map(|(c, _)| c.name().to_lowercase()).collect();
                labelled.sort();
                labelled.dedup();
                mapped.sort();
                mapped.dedup();
                assert_eq!(
                    labelled, mapped,
                    "{}: label {:?} must name exactly its keys",
                    block.title, b.keys
                );
            }
        }
    }

    /// A key press that `chord` matches.
    fn example(chord: Chord) -> KeyEvent {
        match chord {
            Chord::Key(code) => KeyEvent::new(code, KeyModifiers::NONE),
            Chord::Ctrl(c) => KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL),
            Chord::Text => KeyEvent::new(KeyCode::Char('x'), KeyModifiers::NONE),
        }
    }

    #[test]
    fn no_key_means_two_things_in_one_block() {
        for block in KEYMAP {
            let chords: Vec<Chord> = block
                .bindings
                .iter()
                .flat_map(|b| b.map.iter().map(|(c, _)| *c))
                .collect();
            for &chord in &chords {
                let ev = example(chord);
                let hits = chords.iter().filter(|c| c.matches(&ev)).count();
                assert_eq!(
                    hits,
                    1,
                    "{}: {} is bound {hits} times",
                    block.title,
                    chord.name()
                );
            }
        }
    }

    #[test]
    fn every_place_has_one_block() {
        for (i, a) in KEYMAP.iter().enumerate() {
            assert!(
                KEYMAP[i + 1..].iter().all(|b| b.place != a.place),
                "{} twice",
                a.title
            );
        }
        for screen in [
            Screen::Overview,
            Screen::Subscriptions,
            Screen::Live,
            Screen::Form,
            Screen::SubscriptionDetail,
            Screen::WebhookDetail,
            Screen::Failed,
        ] {
            assert!(
                block(Where::Screen(screen)).is_some(),
                "{screen:?} has no keys"
            );
        }
    }

    #[test]
    fn lookups() {
        let ctrl_u = KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL);
        let u = KeyEvent::new(KeyCode::Char('u'), KeyModifiers::NONE);
        let form = Where::Screen(Screen::Form);
        assert_eq!(command(form, &ctrl_u), Some(Cmd::ClearField));
        assert_eq!(command(form, &u), Some(Cmd::Type));
        assert_eq!(command(Where::Everywhere, &u), None);
        assert_eq!(
            key_name(Where::Everywhere, Cmd::Show(Tab::Live)).as_deref(),
            Some("3")
        );
        assert_eq!(
            key_name(Where::Everywhere, Cmd::Show(Tab::Failed)).as_deref(),
            Some("4")
        );
        let ctrl_l = KeyEvent::new(KeyCode::Char('l'), KeyModifiers::CONTROL);
        let webhook = Where::Screen(Screen::WebhookDetail);
        assert_eq!(command(webhook, &ctrl_l), Some(Cmd::Refresh));
        assert_eq!(command(webhook, &u), None);
        let r = KeyEvent::new(KeyCode::Char('r'), KeyModifiers::NONE);
        assert_eq!(command(webhook, &r), Some(Cmd::Redeliver));
        let shift_r = KeyEvent::new(KeyCode::Char('R'), KeyModifiers::SHIFT);
        let list = Where::Screen(Screen::Subscriptions);
        assert_eq!(command(list, &shift_r), Some(Cmd::Recover));
        assert_eq!(command(list, &r), Some(Cmd::Refresh));
        let hints: Vec<&str> = footer(Where::Screen(Screen::SubscriptionDetail))
            .iter()
            .map(|(_, h)| h.does)
            .collect();
        assert_eq!(
            hints,
            [
                "select",
                "open webhook",
                "edit",
                "delete",
                "disable",
                "recover",
                "back",
                "help",
                "quit"
            ]
        );
    }
}
