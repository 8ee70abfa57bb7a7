//! The "delete this subscription?" dialog: asked from the list and the
//! detail screen, answered with the keys of its key table block.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::View;
use crate::api::{ApiError, Subscription};
use crate::app::{short_id, App, Effect};
use crate::keymap::{self, Cmd, Where};
use crate::widgets::popup_area;

/// The pending "delete this subscription?" question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteConfirm {
    /// Subscription id.
    pub id: String,
    /// Its URL, to make sure the operator deletes the right one.
    pub target_url: String,
}

impl App {
    /// The pending delete confirmation, if any.
    pub fn delete_confirmation(&self) -> Option<&DeleteConfirm> {
        self.confirm_delete.as_ref()
    }

    pub(crate) fn ask_delete(&mut self, sub: &Subscription) {
        self.confirm_delete = Some(DeleteConfirm {
            id: sub.id.clone(),
            target_url: sub.target_url.clone(),
        });
    }

    pub(crate) fn confirm_command(&mut self, cmd: Cmd) -> Vec<Effect> {
        let Some(confirm) = self.confirm_delete.clone() else {
            return Vec::new();
        };
        match cmd {
            Cmd::Confirm => {
                self.confirm_delete = None;
                self.set_flash(format!("Deleting {}…", short_id(&confirm.id)), false);
                return vec![Effect::DeleteSubscription(confirm.id)];
            }
            Cmd::Cancel => self.confirm_delete = None,
            _ => {}
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

/// Draw the pending question, if any, over `area`.
pub(crate) fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let Some(DeleteConfirm {
        id,
        target_url: url,
    }) = &app.confirm_delete
    else {
        return;
    };
    let popup = popup_area(area, 64, 7);
    frame.render_widget(Clear, popup);
    let block = Block::bordered()
        .border_type(BorderType::Double)
        .border_style(Style::new().fg(Color::Red))
        .title(Line::from(" Delete subscription? ").style(Style::new().fg(Color::Red).bold()));
    let lines = vec![
        Line::from(vec![
            Span::raw(" Delete "),
            Span::styled(short_id(id).to_string(), Style::new().bold()),
            Span::raw(format!(" → {url}")),
        ]),
        Line::from(" Its pending deliveries stop. This cannot be undone."),
        Line::from(""),
        Line::from(dialog_keys(Where::DeleteDialog)),
    ];
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        popup,
    );
}

/// The answers of a dialog as buttons, from its key table block: the one
/// that confirms in red.
fn dialog_keys(place: Where) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    for b in keymap::block(place).map_or(&[][..], |block| block.bindings) {
        let confirms = b.map.iter().any(|&(_, cmd)| cmd == Cmd::Confirm);
        let bg = if confirms { Color::Red } else { Color::Gray };
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
        assert_eq!(app.delete_confirmation().map(|c| &c.id), Some(&id));
        assert!(app.update(ch('n')).is_empty());
        assert!(app.delete_confirmation().is_none());
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
}
