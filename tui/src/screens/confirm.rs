//! The y/n questions before deleting, disabling or enabling a
//! subscription (asked from the list, the detail screen and the overview)
//! and before redelivering a webhook (from the Failed list and the webhook
//! detail), answered with the keys of the dialog's key table block.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::View;
use crate::api::{ApiError, Redelivery, Subscription, SubscriptionState};
use crate::app::{short_id, App, Effect};
use crate::keymap::{self, Cmd, Where};
use crate::widgets::popup_area;

/// What a dialog asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Delete the subscription.
    Delete,
    /// Stop delivering to it.
    Disable,
    /// Deliver to it again.
    Enable,
    /// Deliver a webhook again.
    Redeliver,
}

impl Ask {
    /// The verb, capitalised for titles and flashes.
    fn verb(self) -> &'static str {
        match self {
            Ask::Delete => "Delete",
            Ask::Disable => "Disable",
            Ask::Enable => "Enable",
            Ask::Redeliver => "Redeliver",
        }
    }

    /// What it is asked about.
    fn noun(self) -> &'static str {
        match self {
            Ask::Redeliver => "webhook",
            Ask::Delete | Ask::Disable | Ask::Enable => "subscription",
        }
    }

    /// The dialog's frame and "yes" button colour.
    fn colour(self) -> Color {
        match self {
            Ask::Delete => Color::Red,
            Ask::Disable => Color::Yellow,
            Ask::Enable => Color::Green,
            Ask::Redeliver => Color::Yellow,
        }
    }

    /// "Deleting", for the flash while the request runs.
    fn doing(self) -> &'static str {
        match self {
            Ask::Delete => "Deleting",
            Ask::Disable => "Disabling",
            Ask::Enable => "Enabling",
            Ask::Redeliver => "Redelivering",
        }
    }

    /// What answering yes does, one line each (the dialog is 62 wide).
    fn consequence(self) -> &'static [&'static str] {
        match self {
            Ask::Delete => &[" Its pending deliveries stop. This cannot be undone."],
            Ask::Disable => &[
                " Nothing is sent to it until it is enabled again; its",
                " webhooks fail as \"not sent: subscription disabled\".",
            ],
            Ask::Enable => &[" Deliveries resume, with the circuit closed."],
            Ask::Redeliver => &[
                " It is queued and delivered again, with a new retry",
                " schedule; its earlier attempts stay in its timeline.",
            ],
        }
    }
}

/// A pending question about one subscription or webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    /// What is asked.
    pub ask: Ask,
    /// Subscription id (webhook id for [`Ask::Redeliver`]).
    pub id: String,
    /// Where it goes (a webhook: its subscription's URL, or the
    /// subscription id when the URL is not known), to make sure the
    /// operator picks the right one.
    pub target_url: String,
}

impl App {
    /// The pending confirmation, if any.
    pub fn confirmation(&self) -> Option<&Confirm> {
        self.confirm.as_ref()
    }

    pub(crate) fn ask(&mut self, ask: Ask, sub: &Subscription) {
        self.confirm = Some(Confirm {
            ask,
            id: sub.id.clone(),
            target_url: sub.target_url.clone(),
        });
    }

    /// Ask to redeliver webhook `id` of subscription `subscription_id`.
    pub(crate) fn ask_redeliver(&mut self, id: &str, subscription_id: &str) {
        let target = match self.subs.items.iter().find(|s| s.id == subscription_id) {
            Some(sub) => sub.target_url.clone(),
            None => format!("subscription {}", short_id(subscription_id)),
        };
        self.confirm = Some(Confirm {
            ask: Ask::Redeliver,
            id: id.to_string(),
            target_url: target,
        });
    }

    /// Ask to disable `sub`, or to enable it when it is disabled.
    pub(crate) fn ask_toggle(&mut self, sub: &Subscription) {
        let ask = match sub.state {
            SubscriptionState::Disabled => Ask::Enable,
            SubscriptionState::Active | SubscriptionState::Unknown => Ask::Disable,
        };
        self.ask(ask, sub);
    }

    pub(crate) fn confirm_command(&mut self, cmd: Cmd) -> Vec<Effect> {
        let Some(confirm) = self.confirm.clone() else {
            return Vec::new();
        };
        match cmd {
            Cmd::Confirm => {
                self.confirm = None;
                let doing = confirm.ask.doing();
                self.set_flash(format!("{doing} {}…", short_id(&confirm.id)), false);
                let effect = match confirm.ask {
                    Ask::Delete => Effect::DeleteSubscription(confirm.id),
                    Ask::Disable => Effect::SetSubscriptionState {
                        id: confirm.id,
                        state: SubscriptionState::Disabled,
                    },
                    Ask::Enable => Effect::SetSubscriptionState {
                        id: confirm.id,
                        state: SubscriptionState::Active,
                    },
                    Ask::Redeliver => Effect::Redeliver(confirm.id),
                };
                return vec![effect];
            }
            Cmd::Cancel => self.confirm = None,
            _ => {}
        }
        Vec::new()
    }

    pub(crate) fn on_state_set(
        &mut self,
        state: SubscriptionState,
        result: Result<Subscription, ApiError>,
    ) -> Vec<Effect> {
        self.note(&result);
        let verb = match state {
            SubscriptionState::Disabled => Ask::Disable.verb(),
            SubscriptionState::Active | SubscriptionState::Unknown => Ask::Enable.verb(),
        };
        match result {
            Ok(sub) => {
                self.upsert_subscription(&sub);
                self.set_flash(format!("{verb}d subscription {}", short_id(&sub.id)), false);
            }
            Err(e) => self.set_flash(format!("{verb} failed: {}", e.short()), true),
        }
        Vec::new()
    }

    pub(crate) fn on_deleted(&mut self, id: String, result: Result<(), ApiError>) -> Vec<Effect> {
        self.note(&result);
        match result {
            Ok(()) | Err(ApiError::Http { status: 404, .. }) => {
                let selected_id = self.selected_subscription().map(|s| s.id.clone());
                self.subs.items.retain(|s| s.id != id);
                self.recent.remove(&id);
                self.reselect(selected_id.as_deref());
                // Views about the deleted subscription make no sense now.
                if let Some(pos) = self.stack.iter().position(|v| match v {
                    View::SubscriptionDetail(d) => d.id == id,
                    View::Form(f) => f.editing.as_ref().is_some_and(|s| s.id == id),
                    View::WebhookDetail(_) => false,
                }) {
                    self.stack.truncate(pos);
                }
                self.set_flash(format!("Deleted subscription {}", short_id(&id)), false);
            }
            Err(e) => self.set_flash(format!("Delete failed: {}", e.short()), true),
        }
        Vec::new()
    }
}

impl App {
    /// The answer to a redelivery: "redelivery n queued" (the webhook
    /// leaves the Failed list, its detail polls again), or the server's
    /// reason (not found, not final yet, subscription disabled, payload
    /// aged out).
    pub(crate) fn on_redelivered(
        &mut self,
        id: String,
        result: Result<Redelivery, ApiError>,
    ) -> Vec<Effect> {
        self.note(&result);
        match result {
            Ok(r) => {
                self.set_flash(
                    format!(
                        "Redelivery {} queued for webhook {}",
                        r.redelivery,
                        short_id(&id)
                    ),
                    false,
                );
                self.forget_failed(&id);
                let open = self
                    .stack
                    .iter()
                    .any(|v| matches!(v, View::WebhookDetail(w) if w.id == id));
                if open {
                    return self.load_webhook(&id).into_iter().collect();
                }
            }
            Err(e) => self.set_flash(format!("Redeliver failed: {}", e.short()), true),
        }
        Vec::new()
    }
}

/// Draw the pending question, if any, over `area`.
pub(crate) fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let Some(Confirm {
        ask,
        id,
        target_url: url,
    }) = &app.confirm
    else {
        return;
    };
    let colour = ask.colour();
    let consequence = ask.consequence();
    let popup = popup_area(area, 64, 6 + consequence.len() as u16);
    frame.render_widget(Clear, popup);
    let title = format!(" {} {}? ", ask.verb(), ask.noun());
    let block = Block::bordered()
        .border_type(BorderType::Double)
        .border_style(Style::new().fg(colour))
        .title(Line::from(title).style(Style::new().fg(colour).bold()));
    let mut lines = vec![Line::from(vec![
        Span::raw(format!(" {} ", ask.verb())),
        Span::styled(short_id(id).to_string(), Style::new().bold()),
        Span::raw(format!(" → {url}")),
    ])];
    lines.extend(consequence.iter().map(|&l| Line::from(l)));
    lines.push(Line::from(""));
    lines.push(Line::from(dialog_keys(Where::Dialog(*ask), colour)));
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        popup,
    );
}

/// The answers of a dialog as buttons, from its key table block: the one
/// that confirms in `colour`.
pub(crate) fn dialog_keys(place: Where, colour: Color) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    for b in keymap::block(place).map_or(&[][..], |block| block.bindings) {
        let confirms = b.map.iter().any(|&(_, cmd)| cmd == Cmd::Confirm);
        let bg = if confirms { colour } else { Color::Gray };
        if !spans.is_empty() {
            spans.push(Span::raw("    "));
        }
        spans.push(Span::styled(
            format!(" {} ", b.keys),
            Style::new().fg(Color::Black).bg(bg).bold(),
        ));
        spans.push(Span::raw(format!(" {}", b.does)));
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Action;
    use crate::screens::Screen;
    use crate::testkit::*;
    use ratatui::crossterm::event::KeyCode;

    #[test]
    fn delete_asks_first() {
        let mut app = loaded_app();
        let id = sub(1, "", None).id;
        app.update(ch('d'));
        assert_eq!(app.confirmation().map(|c| &c.id), Some(&id));
        assert!(app.update(ch('n')).is_empty());
        assert!(app.confirmation().is_none());
        app.update(ch('d'));
        // Other keys are swallowed while asking.
        assert!(app.update(ch('q')).is_empty());
        assert!(!app.should_quit());
        let fx = app.update(ch('y'));
        assert_eq!(fx, vec![Effect::DeleteSubscription(id.clone())]);
        app.update(Action::SubscriptionDeleted {
            id: id.clone(),
            result: Ok(()),
        });
        assert_eq!(app.subscriptions().items.len(), 1);
        assert!(app.flash().unwrap().text.contains("Deleted"));
    }

    #[test]
    fn delete_from_detail_returns_to_list() {
        let mut app = loaded_app();
        app.update(key(KeyCode::Enter));
        assert_eq!(app.screen(), Screen::SubscriptionDetail);
        app.update(ch('d'));
        let fx = app.update(ch('y'));
        let id = sub(1, "", None).id;
        assert_eq!(fx, vec![Effect::DeleteSubscription(id.clone())]);
        app.update(Action::SubscriptionDeleted { id, result: Ok(()) });
        assert_eq!(app.screen(), Screen::Subscriptions);
    }

    #[test]
    fn failed_delete_is_flashed() {
        let mut app = loaded_app();
        app.update(ch('d'));
        app.update(ch('y'));
        app.update(Action::SubscriptionDeleted {
            id: sub(1, "", None).id,
            result: Err(ApiError::Http {
                status: 500,
                code: "internal".into(),
                message: "boom".into(),
                field: None,
            }),
        });
        assert_eq!(app.subscriptions().items.len(), 2);
        assert!(app.flash().unwrap().is_error);
    }

    fn answered(app: &mut App, state: SubscriptionState) {
        let mut s = sub(1, "https://a.example/hook", Some(&["order.created"]));
        s.state = state;
        app.update(Action::SubscriptionStateSet {
            id: s.id.clone(),
            state,
            result: Ok(s),
        });
    }

    fn footer_has(app: &App, words: &str) -> bool {
        crate::ui::key_hints(app)
            .iter()
            .any(|(k, w)| format!("{k} {w}") == words)
    }

    #[test]
    fn x_disables_then_enables_after_asking() {
        let mut app = loaded_app();
        let id = sub(1, "", None).id;
        assert!(footer_has(&app, "x disable"));
        app.update(ch('x'));
        assert_eq!(app.confirmation().map(|c| c.ask), Some(Ask::Disable));
        assert!(footer_has(&app, "y disable"));
        assert!(app.update(key(KeyCode::Esc)).is_empty());
        assert!(app.confirmation().is_none());
        app.update(ch('x'));
        let fx = app.update(ch('y'));
        assert_eq!(
            fx,
            vec![Effect::SetSubscriptionState {
                id: id.clone(),
                state: SubscriptionState::Disabled
            }]
        );
        answered(&mut app, SubscriptionState::Disabled);
        assert_eq!(
            app.subscriptions().items[0].state,
            SubscriptionState::Disabled
        );
        assert!(app.flash().unwrap().text.contains("Disabled subscription"));
        // Now the same key offers to enable it.
        assert!(footer_has(&app, "x enable"));
        app.update(ch('x'));
        assert_eq!(app.confirmation().map(|c| c.ask), Some(Ask::Enable));
        let fx = app.update(ch('Y'));
        assert_eq!(
            fx,
            vec![Effect::SetSubscriptionState {
                id,
                state: SubscriptionState::Active
            }]
        );
        answered(&mut app, SubscriptionState::Active);
        assert_eq!(
            app.subscriptions().items[0].state,
            SubscriptionState::Active
        );
    }

    #[test]
    fn x_in_the_detail_and_a_failed_answer() {
        let mut app = loaded_app();
        app.update(key(KeyCode::Enter));
        assert_eq!(app.screen(), Screen::SubscriptionDetail);
        app.update(ch('x'));
        assert_eq!(app.confirmation().map(|c| c.ask), Some(Ask::Disable));
        assert_eq!(app.update(ch('y')).len(), 1);
        app.update(Action::SubscriptionStateSet {
            id: sub(1, "", None).id,
            state: SubscriptionState::Disabled,
            result: Err(ApiError::Http {
                status: 422,
                code: "validation_failed".into(),
                message: "bad state".into(),
                field: Some("state".into()),
            }),
        });
        let flash = app.flash().unwrap();
        assert!(
            flash.is_error && flash.text.starts_with("Disable failed"),
            "{flash:?}"
        );
        assert_eq!(
            app.subscriptions().items[0].state,
            SubscriptionState::Active
        );
        assert_eq!(app.screen(), Screen::SubscriptionDetail);
    }
}
