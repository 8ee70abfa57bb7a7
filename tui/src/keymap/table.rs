//! The key table itself: one [`Block`] per place, in the order the help
//! overlay and README list them. A new screen adds its block here.

use ratatui::crossterm::event::KeyCode;

use super::{Binding, Block, Chord, Cmd, Hint, Where};
use crate::screens::confirm::Ask;
use crate::screens::recover::RecoverStage;
use crate::screens::{Screen, Tab};

const fn bind(keys: &'static str, does: &'static str, map: &'static [(Chord, Cmd)]) -> Binding {
    Binding {
        keys,
        does,
        map,
        hints: &[],
        in_help: true,
    }
}

const fn hint(keys: &'static str, does: &'static str) -> Hint {
    Hint { keys, does }
}

const fn key(c: char) -> Chord {
    Chord::Key(KeyCode::Char(c))
}

const UP: Chord = Chord::Key(KeyCode::Up);
const DOWN: Chord = Chord::Key(KeyCode::Down);
const ENTER: Chord = Chord::Key(KeyCode::Enter);
const ESC: Chord = Chord::Key(KeyCode::Esc);
const TAB: Chord = Chord::Key(KeyCode::Tab);
const BACKTAB: Chord = Chord::Key(KeyCode::BackTab);
const HOME: Chord = Chord::Key(KeyCode::Home);
const END: Chord = Chord::Key(KeyCode::End);

// Bindings used in more than one block.

const NEXT_TAB: Binding =
    bind("Tab", "next screen", &[(TAB, Cmd::NextTab)]).hints(&[hint("Tab/1-4", "screens")]);
const HELP: Binding = bind(
    "? / 5",
    "this help",
    &[(key('?'), Cmd::Help), (key('5'), Cmd::Help)],
)
.hints(&[hint("?", "help")]);
const BACK: Binding =
    bind("Esc", "back / close", &[(ESC, Cmd::Back)]).hints(&[hint("Esc", "back")]);
const QUIT: Binding = bind("q", "quit", &[(key('q'), Cmd::Quit)]).hints(&[hint("q", "quit")]);
const FORCE_QUIT: Binding = bind(
    "Ctrl-C",
    "quit (also in forms)",
    &[(Chord::Ctrl('c'), Cmd::ForceQuit)],
)
.hints(&[hint("Ctrl-C", "quit")]);
const LIST_SELECT: Binding = bind(
    "↑↓ j k",
    "select",
    &[
        (UP, Cmd::Up),
        (key('k'), Cmd::Up),
        (DOWN, Cmd::Down),
        (key('j'), Cmd::Down),
    ],
)
.hints(&[hint("↑↓", "select")]);
const TOGGLE_DISABLED: Binding = bind(
    "x",
    "disable / enable (asks y/n)",
    &[(key('x'), Cmd::ToggleDisabled)],
)
.hints(&[hint("x", "disable")]);
const REFRESH: Binding =
    bind("r", "refresh", &[(key('r'), Cmd::Refresh)]).hints(&[hint("r", "refresh")]);
/// Where `r` redelivers, Ctrl-L (the terminal's "redraw") refreshes.
const CTRL_L_REFRESH: Binding = bind("Ctrl-L", "refresh", &[(Chord::Ctrl('l'), Cmd::Refresh)])
    .hints(&[hint("Ctrl-L", "refresh")]);
const REDELIVER: Binding = bind("r", "redeliver (asks y/n)", &[(key('r'), Cmd::Redeliver)])
    .hints(&[hint("r", "redeliver")]);
const RECOVER: Binding =
    bind("R", "recover a time window", &[(key('R'), Cmd::Recover)]).hints(&[hint("R", "recover")]);
const SHOW_FAILED: Binding = bind(
    "f",
    "its failed webhooks (screen 4)",
    &[(key('f'), Cmd::ShowFailed)],
)
.unlisted();
const ERASE: Binding = bind(
    "Backspace",
    "delete the last character",
    &[(Chord::Key(KeyCode::Backspace), Cmd::Erase)],
)
.unlisted();
const MORE_MOVES: Binding = bind(
    "j k Home End g G",
    "select, first, last",
    &[
        (key('k'), Cmd::Up),
        (key('j'), Cmd::Down),
        (HOME, Cmd::Top),
        (key('g'), Cmd::Top),
        (END, Cmd::Bottom),
        (key('G'), Cmd::Bottom),
    ],
)
.unlisted();

const EVERYWHERE: Block = Block {
    place: Where::Everywhere,
    title: "Everywhere",
    in_help: true,
    bindings: &[
        bind(
            "1 / 2 / 3 / 4",
            "the screens of the tab bar",
            &[
                (key('1'), Cmd::Show(Tab::Overview)),
                (key('2'), Cmd::Show(Tab::Subscriptions)),
                (key('3'), Cmd::Show(Tab::Live)),
                (key('4'), Cmd::Show(Tab::Failed)),
            ],
        ),
        NEXT_TAB,
        bind("⇧Tab", "previous screen", &[(BACKTAB, Cmd::PrevTab)]).unlisted(),
        HELP,
        BACK,
        QUIT,
        FORCE_QUIT,
    ],
    footer_also: &[],
};

const OVERVIEW: Block = Block {
    place: Where::Screen(Screen::Overview),
    title: "Overview",
    in_help: true,
    bindings: &[
        bind("↑↓ j k", "select in Needs attention", LIST_SELECT.map).hints(LIST_SELECT.hints),
        bind("Enter", "open subscription", &[(ENTER, Cmd::Open)]).hints(&[hint("⏎", "open")]),
        TOGGLE_DISABLED,
        REFRESH,
    ],
    footer_also: &[NEXT_TAB, HELP, QUIT],
};

const SUBSCRIPTIONS: Block = Block {
    place: Where::Screen(Screen::Subscriptions),
    title: "Subscriptions",
    in_help: true,
    bindings: &[
        LIST_SELECT,
        bind("Enter", "open", &[(ENTER, Cmd::Open)]).hints(&[hint("⏎", "open")]),
        bind("n", "new", &[(key('n'), Cmd::New)]).hints(&[hint("n", "new")]),
        bind("e", "edit", &[(key('e'), Cmd::Edit)]).hints(&[hint("e", "edit")]),
        bind("d", "delete (asks y/n)", &[(key('d'), Cmd::Delete)]).hints(&[hint("d", "delete")]),
        TOGGLE_DISABLED,
        RECOVER,
        SHOW_FAILED,
        bind("/", "filter url/id/events", &[(key('/'), Cmd::Filter)]).hints(&[hint("/", "filter")]),
        // The list reloads itself; the footer has no room for r.
        REFRESH.hints(&[]),
        bind(
            "PgUp PgDn Home End g G",
            "page up / down, first, last",
            &[
                (Chord::Key(KeyCode::PageUp), Cmd::PageUp),
                (Chord::Key(KeyCode::PageDown), Cmd::PageDown),
                (HOME, Cmd::Top),
                (key('g'), Cmd::Top),
                (END, Cmd::Bottom),
                (key('G'), Cmd::Bottom),
            ],
        )
        .unlisted(),
        bind("Esc", "clear the filter", &[(ESC, Cmd::ClearFilter)]).unlisted(),
    ],
    // The tab bar shows the screens' keys; the footer has no room.
    footer_also: &[HELP, QUIT],
};

const FILTER_LINE: Block = Block {
    place: Where::FilterLine,
    title: "Filter line",
    in_help: false,
    bindings: &[
        bind(
            "type",
            "filter by a part of id, URL or events",
            &[(Chord::Text, Cmd::Type)],
        )
        .hints(&[hint("type", "filter")]),
        bind(
            "Enter",
            "keep the filter, back to the list",
            &[(ENTER, Cmd::FilterDone)],
        )
        .hints(&[hint("⏎", "done")]),
        bind("Esc", "clear the filter", &[(ESC, Cmd::ClearFilter)])
            .hints(&[hint("Esc", "clear filter")]),
        ERASE,
    ],
    footer_also: &[LIST_SELECT],
};

const FORM: Block = Block {
    place: Where::Screen(Screen::Form),
    title: "New / edit form",
    in_help: true,
    bindings: &[
        bind(
            "Tab ↓ / ⇧Tab ↑",
            "next / previous field",
            &[
                (TAB, Cmd::NextField),
                (DOWN, Cmd::NextField),
                (BACKTAB, Cmd::PrevField),
                (UP, Cmd::PrevField),
            ],
        )
        .hints(&[hint("Tab/⇧Tab/↑↓", "field")]),
        bind("Enter", "save", &[(ENTER, Cmd::Save)]).hints(&[hint("⏎", "save")]),
        bind(
            "Ctrl-U",
            "clear field",
            &[(Chord::Ctrl('u'), Cmd::ClearField)],
        )
        .hints(&[hint("Ctrl-U", "clear field")]),
        bind("Esc", "cancel", &[(ESC, Cmd::Cancel)]).hints(&[hint("Esc", "cancel")]),
        bind(
            "type",
            "edit the focused field",
            &[(Chord::Text, Cmd::Type)],
        )
        .unlisted(),
        ERASE,
    ],
    footer_also: &[FORCE_QUIT],
};

const SUBSCRIPTION_DETAIL: Block = Block {
    place: Where::Screen(Screen::SubscriptionDetail),
    title: "Subscription detail",
    in_help: true,
    bindings: &[
        bind("↑↓", "select attempt", &[(UP, Cmd::Up), (DOWN, Cmd::Down)])
            .hints(&[hint("↑↓", "select")])
            .unlisted(),
        bind("Enter", "open its webhook", &[(ENTER, Cmd::Open)])
            .hints(&[hint("⏎", "open webhook")]),
        bind(
            "e / d",
            "edit / delete",
            &[(key('e'), Cmd::Edit), (key('d'), Cmd::Delete)],
        )
        .hints(&[hint("e", "edit"), hint("d", "delete")]),
        TOGGLE_DISABLED,
        RECOVER,
        SHOW_FAILED,
        // It reloads itself every second; neither help nor footer has room.
        REFRESH.hints(&[]).unlisted(),
        MORE_MOVES,
    ],
    footer_also: &[BACK, HELP, QUIT],
};

const WEBHOOK_DETAIL: Block = Block {
    place: Where::Screen(Screen::WebhookDetail),
    title: "Webhook detail",
    in_help: true,
    bindings: &[
        bind("↑↓", "select attempt", &[(UP, Cmd::Up), (DOWN, Cmd::Down)])
            .hints(&[hint("↑↓", "select attempt")])
            .unlisted(),
        REDELIVER,
        bind(
            "s",
            "open subscription",
            &[(key('s'), Cmd::OpenSubscription)],
        )
        .hints(&[hint("s", "subscription")]),
        CTRL_L_REFRESH,
        MORE_MOVES,
    ],
    footer_also: &[BACK, HELP, QUIT],
};

const FAILED: Block = Block {
    place: Where::Screen(Screen::Failed),
    title: "Failed webhooks",
    in_help: true,
    bindings: &[
        LIST_SELECT.unlisted(),
        bind("Enter", "open webhook", &[(ENTER, Cmd::Open)]).hints(&[hint("⏎", "open")]),
        REDELIVER,
        bind(
            "f / Esc",
            "next subscription / all",
            &[(key('f'), Cmd::CycleFilter), (ESC, Cmd::ClearFilter)],
        )
        .hints(&[hint("f", "subscription")]),
        CTRL_L_REFRESH,
        bind(
            "PgUp PgDn Home End g G",
            "page up / down, first, last (loads more)",
            &[
                (Chord::Key(KeyCode::PageUp), Cmd::PageUp),
                (Chord::Key(KeyCode::PageDown), Cmd::PageDown),
                (HOME, Cmd::Top),
                (key('g'), Cmd::Top),
                (END, Cmd::Bottom),
                (key('G'), Cmd::Bottom),
            ],
        )
        .unlisted(),
    ],
    footer_also: &[HELP, QUIT],
};

const LIVE: Block = Block {
    place: Where::Screen(Screen::Live),
    title: "Live deliveries",
    in_help: true,
    bindings: &[
        bind(
            "space",
            "pause / resume (buffers)",
            &[(key(' '), Cmd::TogglePause)],
        )
        .hints(&[hint("space", "pause (buffers)")]),
        bind("f", "outcome filter", &[(key('f'), Cmd::CycleFilter)]).hints(&[hint("f", "filter")]),
        bind("↑↓", "select", &[(UP, Cmd::Up), (DOWN, Cmd::Down)])
            .hints(&[hint("↑↓", "select")])
            .unlisted(),
        bind("Enter", "open webhook", &[(ENTER, Cmd::Open)]).hints(&[hint("⏎", "open")]),
        bind(
            "End / Esc",
            "follow the tail",
            &[(END, Cmd::Follow), (ESC, Cmd::Follow)],
        )
        .hints(&[hint("End", "follow")]),
        bind("c", "clear", &[(key('c'), Cmd::Clear)]),
        bind(
            "j k G",
            "select, follow the tail",
            &[
                (key('k'), Cmd::Up),
                (key('j'), Cmd::Down),
                (key('G'), Cmd::Follow),
            ],
        )
        .unlisted(),
    ],
    footer_also: &[HELP, QUIT],
};

const HELP_OVERLAY: Block = Block {
    place: Where::HelpOverlay,
    title: "Help overlay",
    in_help: false,
    bindings: &[
        bind(
            "Esc / ? / 5 / Enter",
            "close the help",
            &[
                (ESC, Cmd::CloseHelp),
                (key('?'), Cmd::CloseHelp),
                (key('5'), Cmd::CloseHelp),
                (ENTER, Cmd::CloseHelp),
            ],
        )
        .hints(&[hint("Esc/?", "close help")]),
        QUIT,
    ],
    footer_also: &[],
};

const YES: &[(Chord, Cmd)] = &[(key('y'), Cmd::Confirm), (key('Y'), Cmd::Confirm)];
const NO: &[(Chord, Cmd)] = &[
    (key('n'), Cmd::Cancel),
    (key('N'), Cmd::Cancel),
    (ESC, Cmd::Cancel),
];

/// The block of a y/n dialog: `y` does it, `n` or Esc keeps things as
/// they are.
const fn dialog(ask: Ask, title: &'static str, bindings: &'static [Binding]) -> Block {
    Block {
        place: Where::Dialog(ask),
        title,
        in_help: false,
        bindings,
        footer_also: &[],
    }
}

const DELETE_DIALOG: Block = dialog(
    Ask::Delete,
    "Delete confirmation",
    &[
        bind("y", "delete", YES).hints(&[hint("y", "delete")]),
        bind("n / Esc", "keep", NO).hints(&[hint("n/Esc", "keep")]),
    ],
);

const DISABLE_DIALOG: Block = dialog(
    Ask::Disable,
    "Disable confirmation",
    &[
        bind("y", "disable", YES).hints(&[hint("y", "disable")]),
        bind("n / Esc", "keep it active", NO).hints(&[hint("n/Esc", "keep it active")]),
    ],
);

const ENABLE_DIALOG: Block = dialog(
    Ask::Enable,
    "Enable confirmation",
    &[
        bind("y", "enable", YES).hints(&[hint("y", "enable")]),
        bind("n / Esc", "keep it disabled", NO).hints(&[hint("n/Esc", "keep it disabled")]),
    ],
);

const REDELIVER_DIALOG: Block = dialog(
    Ask::Redeliver,
    "Redeliver confirmation",
    &[
        bind("y", "redeliver", YES).hints(&[hint("y", "redeliver")]),
        bind("n / Esc", "do not redeliver", NO).hints(&[hint("n/Esc", "cancel")]),
    ],
);

/// A block of the recover dialog (which takes every key, like a form).
const fn recover(stage: RecoverStage, title: &'static str, bindings: &'static [Binding]) -> Block {
    Block {
        place: Where::Recover(stage),
        title,
        in_help: false,
        bindings,
        footer_also: &[FORCE_QUIT],
    }
}

const RECOVER_WINDOW: Block = recover(
    RecoverStage::Edit,
    "Recover dialog",
    &[
        bind(
            "Tab ↓ / ⇧Tab ↑",
            "next / previous field",
            &[
                (TAB, Cmd::NextField),
                (DOWN, Cmd::NextField),
                (BACKTAB, Cmd::PrevField),
                (UP, Cmd::PrevField),
            ],
        )
        .hints(&[hint("Tab/↑↓", "field")]),
        bind(
            "Enter",
            "count the matching webhooks (dry run)",
            &[(ENTER, Cmd::Save)],
        )
        .hints(&[hint("⏎", "count")]),
        bind(
            "Ctrl-U",
            "clear field",
            &[(Chord::Ctrl('u'), Cmd::ClearField)],
        )
        .hints(&[hint("Ctrl-U", "clear")]),
        bind("Esc", "cancel", &[(ESC, Cmd::Cancel)]).hints(&[hint("Esc", "cancel")]),
        bind(
            "type",
            "edit the focused field",
            &[(Chord::Text, Cmd::Type)],
        ),
        ERASE,
    ],
);

const RECOVER_CONFIRM: Block = recover(
    RecoverStage::Confirm,
    "Recover confirmation",
    &[
        bind(
            "y / Enter",
            "redeliver them",
            &[
                (key('y'), Cmd::Confirm),
                (key('Y'), Cmd::Confirm),
                (ENTER, Cmd::Confirm),
            ],
        )
        .hints(&[hint("y", "recover")]),
        bind("e", "change the window", &[(key('e'), Cmd::Edit)]).hints(&[hint("e", "change")]),
        bind("n / Esc", "cancel", NO).hints(&[hint("n/Esc", "cancel")]),
    ],
);

const RECOVER_DONE: Block = recover(
    RecoverStage::Done,
    "Recover result",
    &[bind(
        "Enter / Esc",
        "close",
        &[(ENTER, Cmd::Cancel), (ESC, Cmd::Cancel)],
    )
    .hints(&[hint("⏎/Esc", "close")])],
);

/// Every key binding of the UI, block by block. The help overlay lists
/// them in two columns: the screens that watch (overview, live tail,
/// failed webhooks), then the subscriptions and what opens from them.
pub static KEYMAP: &[Block] = &[
    EVERYWHERE,
    OVERVIEW,
    LIVE,
    FAILED,
    SUBSCRIPTIONS,
    FILTER_LINE,
    FORM,
    SUBSCRIPTION_DETAIL,
    WEBHOOK_DETAIL,
    HELP_OVERLAY,
    DELETE_DIALOG,
    DISABLE_DIALOG,
    ENABLE_DIALOG,
    REDELIVER_DIALOG,
    RECOVER_WINDOW,
    RECOVER_CONFIRM,
    RECOVER_DONE,
];
