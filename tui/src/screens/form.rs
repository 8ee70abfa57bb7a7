//! The new / edit subscription form: three fields, local checks, the
//! create or patch request, and the server's validation errors shown next
//! to the field they name.

use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Paragraph};
use ratatui::Frame;

use super::View;
use crate::api::{ApiError, NewSubscription, Subscription, SubscriptionPatch};
use crate::app::{short_id, App, Effect};
use crate::keymap::Cmd;
use crate::widgets::{panel, ACCENT};

/// Fields of the subscription form, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormField {
    /// Target URL.
    TargetUrl,
    /// Signing secret.
    Secret,
    /// Comma-separated event types.
    Events,
}

impl FormField {
    /// All fields in tab order.
    pub const ALL: [FormField; 3] = [FormField::TargetUrl, FormField::Secret, FormField::Events];

    /// Position in [`FormField::ALL`].
    pub fn index(self) -> usize {
        match self {
            FormField::TargetUrl => 0,
            FormField::Secret => 1,
            FormField::Events => 2,
        }
    }

    /// The field the server names in a validation error.
    pub fn from_api(field: &str) -> Option<FormField> {
        match field {
            "target_url" | "url" => Some(FormField::TargetUrl),
            "secret" => Some(FormField::Secret),
            f if f == "events" || f.starts_with("events[") || f.starts_with("events.") => {
                Some(FormField::Events)
            }
            _ => None,
        }
    }

    /// Label on screen.
    pub fn label(self) -> &'static str {
        match self {
            FormField::TargetUrl => "Target URL",
            FormField::Secret => "Secret",
            FormField::Events => "Events",
        }
    }
}

/// An error shown in the form: next to a field when the server named one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormError {
    /// The field it belongs to, if known.
    pub field: Option<FormField>,
    /// What went wrong.
    pub message: String,
}

/// State of the new / edit form.
#[derive(Debug, Clone)]
pub struct FormState {
    /// The subscription being edited; `None` when creating.
    pub editing: Option<Subscription>,
    /// Text of each field, indexed by [`FormField::index`].
    pub values: [String; 3],
    /// Field with keyboard focus.
    pub focus: FormField,
    /// Last error, if the submit failed.
    pub error: Option<FormError>,
    /// A submit is in flight; further Enter presses are ignored.
    pub submitting: bool,
}

impl FormState {
    pub(crate) fn create() -> FormState {
        FormState {
            editing: None,
            values: Default::default(),
            focus: FormField::TargetUrl,
            error: None,
            submitting: false,
        }
    }

    pub(crate) fn edit(sub: &Subscription) -> FormState {
        FormState {
            values: [
                sub.target_url.clone(),
                String::new(),
                sub.events
                    .as_ref()
                    .map(|e| e.join(", "))
                    .unwrap_or_default(),
            ],
            editing: Some(sub.clone()),
            focus: FormField::TargetUrl,
            error: None,
            submitting: false,
        }
    }

    /// Current text of `field`.
    pub fn value(&self, field: FormField) -> &str {
        &self.values[field.index()]
    }

    fn value_mut(&mut self) -> &mut String {
        &mut self.values[self.focus.index()]
    }

    fn move_focus(&mut self, forward: bool) {
        let i = self.focus.index();
        let n = FormField::ALL.len();
        let next = if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        };
        self.focus = FormField::ALL[next];
    }
}

/// Split the events field: comma separated, blanks dropped; nothing → `None`
/// (all events).
pub fn parse_events(text: &str) -> Option<Vec<String>> {
    let events: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if events.is_empty() {
        None
    } else {
        Some(events)
    }
}

impl App {
    /// The form in front, if any.
    pub fn form(&self) -> Option<&FormState> {
        match self.stack.last() {
            Some(View::Form(f)) => Some(f),
            _ => None,
        }
    }

    pub(crate) fn on_created(&mut self, result: Result<Subscription, ApiError>) -> Vec<Effect> {
        self.note(&result);
        match result {
            Ok(sub) => {
                if matches!(self.stack.last(), Some(View::Form(f)) if f.editing.is_none()) {
                    self.stack.pop();
                }
                self.upsert_subscription(&sub);
                self.subs.filter.clear();
                self.subs.filter_editing = false;
                self.reselect(Some(&sub.id));
                self.set_flash(format!("Created subscription {}", short_id(&sub.id)), false);
            }
            Err(e) => self.form_failed(None, e),
        }
        Vec::new()
    }

    pub(crate) fn on_updated(
        &mut self,
        id: String,
        result: Result<Subscription, ApiError>,
    ) -> Vec<Effect> {
        self.note(&result);
        match result {
            Ok(sub) => {
                if matches!(self.stack.last(), Some(View::Form(f))
                    if f.editing.as_ref().is_some_and(|s| s.id == id))
                {
                    self.stack.pop();
                }
                self.upsert_subscription(&sub);
                self.set_flash(format!("Saved subscription {}", short_id(&sub.id)), false);
            }
            Err(e) => self.form_failed(Some(&id), e),
        }
        Vec::new()
    }

    /// Show a failed submit in the form it came from (if still open).
    pub(crate) fn form_failed(&mut self, editing_id: Option<&str>, e: ApiError) {
        let Some(View::Form(form)) = self.stack.last_mut() else {
            self.set_flash(format!("Save failed: {}", e.short()), true);
            return;
        };
        if form.editing.as_ref().map(|s| s.id.as_str()) != editing_id {
            self.set_flash(format!("Save failed: {}", e.short()), true);
            return;
        }
        form.submitting = false;
        let field = e.field().and_then(FormField::from_api);
        let message = match &e {
            ApiError::Http { message, .. } if field.is_some() => message.clone(),
            other => other.short(),
        };
        if let Some(f) = field {
            form.focus = f;
        }
        form.error = Some(FormError { field, message });
    }

    pub(crate) fn form_command(&mut self, cmd: Cmd, key: KeyEvent) -> Vec<Effect> {
        let Some(View::Form(form)) = self.stack.last_mut() else {
            return Vec::new();
        };
        match cmd {
            Cmd::Cancel => {
                self.stack.pop();
            }
            Cmd::NextField => form.move_focus(true),
            Cmd::PrevField => form.move_focus(false),
            Cmd::Save => return self.submit_form(),
            Cmd::Erase => {
                form.value_mut().pop();
            }
            Cmd::ClearField => form.value_mut().clear(),
            Cmd::Type => {
                if let KeyCode::Char(c) = key.code {
                    form.value_mut().push(c);
                }
            }
            _ => {}
        }
        Vec::new()
    }

    pub(crate) fn submit_form(&mut self) -> Vec<Effect> {
        let Some(View::Form(form)) = self.stack.last_mut() else {
            return Vec::new();
        };
        if form.submitting {
            return Vec::new();
        }
        let url = form.value(FormField::TargetUrl).trim().to_string();
        let secret = form.value(FormField::Secret).to_string();
        let events = parse_events(form.value(FormField::Events));
        if url.is_empty() {
            form.focus = FormField::TargetUrl;
            form.error = Some(FormError {
                field: Some(FormField::TargetUrl),
                message: "required".into(),
            });
            return Vec::new();
        }
        let effect = match &form.editing {
            None => Effect::CreateSubscription(NewSubscription {
                target_url: url,
                secret: (!secret.is_empty()).then_some(secret),
                events,
            }),
            Some(original) => {
                let patch = SubscriptionPatch {
                    target_url: (url != original.target_url).then_some(url),
                    // Empty means "leave unchanged".
                    secret: (!secret.is_empty()).then_some(Some(secret)),
                    events: (events != original.events).then_some(events),
                    state: None,
                };
                if patch.is_empty() {
                    self.stack.pop();
                    self.set_flash("No changes", false);
                    return Vec::new();
                }
                Effect::UpdateSubscription {
                    id: original.id.clone(),
                    patch,
                }
            }
        };
        form.submitting = true;
        form.error = None;
        vec![effect]
    }
}

/// Draw `form` into `area`.
pub(crate) fn draw(form: &FormState, frame: &mut Frame, area: Rect) {
    let title = match &form.editing {
        Some(s) => format!(" Edit subscription {} ", short_id(&s.id)),
        None => " New subscription ".to_string(),
    };
    let block = panel(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let inner = inner.inner(ratatui::layout::Margin::new(1, 0));
    let rows = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .split(inner);
    for (i, field) in FormField::ALL.into_iter().enumerate() {
        let box_area = rows[1 + i * 2];
        let hint_area = rows[2 + i * 2];
        let focused = form.focus == field;
        let value = form.value(field);
        let shown = match field {
            FormField::Secret => "•".repeat(value.chars().count()),
            _ => value.to_string(),
        };
        let field_error = form
            .error
            .as_ref()
            .filter(|e| e.field == Some(field))
            .map(|e| e.message.clone());
        let border = if field_error.is_some() {
            Style::new().fg(Color::Red)
        } else if focused {
            Style::new().fg(ACCENT)
        } else {
            Style::new().fg(Color::DarkGray)
        };
        let label = if focused {
            format!(" ▸ {} ", field.label())
        } else {
            format!(" {} ", field.label())
        };
        let input = Block::bordered()
            .border_type(BorderType::Rounded)
            .border_style(border)
            .title(label);
        let input_inner = input.inner(box_area);
        // Scroll long values so the end being typed stays visible.
        let room = usize::from(input_inner.width.saturating_sub(1));
        let len = shown.chars().count();
        let shown: String = shown.chars().skip(len.saturating_sub(room)).collect();
        frame.render_widget(Paragraph::new(shown.clone()).block(input), box_area);
        if focused {
            let width = shown.chars().count() as u16;
            frame.set_cursor_position(Position::new(
                (input_inner.x + width).min(input_inner.right().saturating_sub(1)),
                input_inner.y,
            ));
        }
        let hint = match field_error {
            Some(msg) => Line::from(Span::styled(
                format!("  ✖ {msg}"),
                Style::new().fg(Color::Red).bold(),
            )),
            None => Line::from(Span::styled(
                format!("  {}", hint_text(form, field)),
                Style::new().fg(Color::DarkGray),
            )),
        };
        frame.render_widget(Paragraph::new(hint), hint_area);
    }
    let status = if form.submitting {
        Line::from(Span::styled("  Saving…", Style::new().fg(Color::Yellow)))
    } else if let Some(err) = form.error.as_ref().filter(|e| e.field.is_none()) {
        Line::from(Span::styled(
            format!("  ✖ {}", err.message),
            Style::new().fg(Color::Red).bold(),
        ))
    } else {
        Line::from(Span::styled(
            "  Enter saves, Esc cancels.",
            Style::new().fg(Color::DarkGray),
        ))
    };
    frame.render_widget(Paragraph::new(status), rows[7]);
}

fn hint_text(form: &FormState, field: FormField) -> String {
    match (field, &form.editing) {
        (FormField::TargetUrl, _) => "http(s) URL that receives the webhooks".to_string(),
        (FormField::Secret, None) => {
            "optional signing secret, at least 16 characters; empty = unsigned".to_string()
        }
        (FormField::Secret, Some(s)) => format!(
            "empty = leave unchanged (current: {})",
            s.secret.as_deref().unwrap_or("none")
        ),
        (FormField::Events, _) => "comma separated event types; empty = all events".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Action;
    use crate::screens::Screen;
    use crate::testkit::*;
    use ratatui::crossterm::event::KeyModifiers;

    #[test]
    fn ctrl_c_quits_even_in_a_form() {
        let mut app = loaded_app();
        app.update(ch('n'));
        assert_eq!(app.screen(), Screen::Form);
        app.update(ch('q'));
        assert!(!app.should_quit(), "q is text in a form");
        app.update(Action::Key(KeyEvent::new(
            KeyCode::Char('c'),
            KeyModifiers::CONTROL,
        )));
        assert!(app.should_quit());
    }

    #[test]
    fn create_form_submits_and_shows_field_error() {
        let mut app = loaded_app();
        app.update(ch('n'));
        typed(&mut app, "ftp://nope");
        app.update(key(KeyCode::Tab));
        app.update(key(KeyCode::Tab));
        typed(&mut app, "a, b ,");
        let fx = app.update(key(KeyCode::Enter));
        assert_eq!(
            fx,
            vec![Effect::CreateSubscription(NewSubscription {
                target_url: "ftp://nope".into(),
                secret: None,
                events: Some(vec!["a".into(), "b".into()]),
            })]
        );
        // Enter again while submitting does nothing.
        assert!(app.update(key(KeyCode::Enter)).is_empty());
        app.update(Action::SubscriptionCreated(Err(ApiError::Http {
            status: 422,
            code: "validation_failed".into(),
            message: "target_url must be http or https".into(),
            field: Some("target_url".into()),
        })));
        let form = app.form().unwrap();
        assert_eq!(
            form.error,
            Some(FormError {
                field: Some(FormField::TargetUrl),
                message: "target_url must be http or https".into()
            })
        );
        assert_eq!(form.focus, FormField::TargetUrl);
        assert!(!form.submitting);
        let created = sub(3, "https://c.example/hook", None);
        app.update(Action::SubscriptionCreated(Ok(created.clone())));
        assert_eq!(app.screen(), Screen::Subscriptions);
        assert_eq!(app.subscriptions().items.len(), 3);
        assert_eq!(
            app.selected_subscription().map(|s| &s.id),
            Some(&created.id)
        );
    }

    #[test]
    fn empty_url_is_caught_locally() {
        let mut app = loaded_app();
        app.update(ch('n'));
        assert!(app.update(key(KeyCode::Enter)).is_empty());
        assert_eq!(
            app.form().unwrap().error.as_ref().unwrap().field,
            Some(FormField::TargetUrl)
        );
    }

    #[test]
    fn esc_cancels_form() {
        let mut app = loaded_app();
        app.update(ch('n'));
        typed(&mut app, "abc");
        app.update(key(KeyCode::Esc));
        assert_eq!(app.screen(), Screen::Subscriptions);
    }

    #[test]
    fn edit_sends_only_changed_fields() {
        let mut app = loaded_app();
        let original = sub(1, "https://a.example/hook", Some(&["order.created"]));
        app.update(ch('e'));
        let form = app.form().unwrap();
        assert_eq!(form.value(FormField::TargetUrl), "https://a.example/hook");
        assert_eq!(form.value(FormField::Secret), "");
        assert_eq!(form.value(FormField::Events), "order.created");
        // Unchanged: nothing sent, form closed.
        assert!(app.update(key(KeyCode::Enter)).is_empty());
        assert_eq!(app.screen(), Screen::Subscriptions);

        // Clear events (→ null) and leave URL and secret alone.
        app.update(ch('e'));
        app.update(key(KeyCode::BackTab));
        assert_eq!(app.form().unwrap().focus, FormField::Events);
        app.update(Action::Key(KeyEvent::new(
            KeyCode::Char('u'),
            KeyModifiers::CONTROL,
        )));
        let fx = app.update(key(KeyCode::Enter));
        assert_eq!(
            fx,
            vec![Effect::UpdateSubscription {
                id: original.id.clone(),
                patch: SubscriptionPatch {
                    target_url: None,
                    secret: None,
                    events: Some(None),
                    state: None,
                },
            }]
        );
        let mut updated = original.clone();
        updated.events = None;
        app.update(Action::SubscriptionUpdated {
            id: original.id.clone(),
            result: Ok(updated),
        });
        assert_eq!(app.screen(), Screen::Subscriptions);
        assert_eq!(app.subscriptions().items[0].events, None);

        // New secret only.
        app.update(ch('e'));
        app.update(key(KeyCode::Down));
        typed(&mut app, "0123456789abcdefXYZ");
        let fx = app.update(key(KeyCode::Enter));
        assert_eq!(
            fx,
            vec![Effect::UpdateSubscription {
                id: original.id.clone(),
                patch: SubscriptionPatch {
                    target_url: None,
                    secret: Some(Some("0123456789abcdefXYZ".into())),
                    events: None,
                    state: None,
                },
            }]
        );
        app.update(Action::SubscriptionUpdated {
            id: original.id.clone(),
            result: Err(ApiError::Http {
                status: 422,
                code: "validation_failed".into(),
                message: "secret too short".into(),
                field: Some("secret".into()),
            }),
        });
        let err = app.form().unwrap().error.clone().unwrap();
        assert_eq!(err.field, Some(FormField::Secret));
    }
}
