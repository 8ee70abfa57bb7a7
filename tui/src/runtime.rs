//! The loop that connects the pure [`App`] to the world: it feeds events to
//! [`App::update`], runs the returned [`Effect`]s as tokio tasks calling the
//! API [`Client`], and redraws after every batch of events.

use std::io;

use chrono::Utc;
use ratatui::backend::Backend;
use ratatui::crossterm::event::{Event as TermEvent, KeyEventKind};
use ratatui::Terminal;
use tokio::sync::mpsc::UnboundedSender;

use crate::api::Client;
use crate::app::{Action, App, Effect};
use crate::event::{Event, EventLoop};
use crate::ui;

/// Events handled before a redraw at most, so a flood of results cannot
/// starve the screen.
const MAX_BATCH: usize = 256;

/// Carry out one effect against the API and describe the result as an
/// action for [`App::update`].
pub async fn execute(effect: Effect, client: &Client) -> Action {
    match effect {
        Effect::CheckHealth => Action::Health(client.health().await),
        Effect::ScrapeMetrics => {
            let result = client.metrics_text().await;
            Action::MetricsScraped {
                at: Utc::now(),
                result,
            }
        }
        Effect::LoadSubscriptions => Action::SubscriptionsLoaded(client.list_subscriptions().await),
        Effect::LoadSubscription(id) => {
            let result = client.get_subscription(&id).await;
            Action::SubscriptionLoaded { id, result }
        }
        Effect::LoadSubscriptionAttempts { id, limit } => {
            let result = client.subscription_attempts(&id, limit).await;
            Action::SubscriptionAttemptsLoaded { id, result }
        }
        Effect::CreateSubscription(new) => {
            Action::SubscriptionCreated(client.create_subscription(&new).await)
        }
        Effect::UpdateSubscription { id, patch } => {
            let result = client.update_subscription(&id, &patch).await;
            Action::SubscriptionUpdated { id, result }
        }
        Effect::SetSubscriptionState { id, state } => {
            let result = client.set_subscription_state(&id, state).await;
            Action::SubscriptionStateSet { id, state, result }
        }
        Effect::DeleteSubscription(id) => {
            let result = client.delete_subscription(&id).await;
            Action::SubscriptionDeleted { id, result }
        }
        Effect::LoadWebhookStatus(id) => {
            let result = client.webhook_status(&id).await;
            Action::WebhookStatusLoaded { id, result }
        }
        Effect::PollAttempts { after, limit } => {
            let result = client.attempts_after(after, limit).await;
            Action::AttemptsPolled { after, result }
        }
        Effect::LoadFailed {
            seq,
            subscription_id,
            limit,
        } => {
            let result = client
                .list_webhooks(&["failed"], subscription_id.as_deref(), limit)
                .await;
            Action::FailedLoaded {
                seq,
                more: false,
                result,
            }
        }
        Effect::LoadFailedMore { seq, next } => Action::FailedLoaded {
            seq,
            more: true,
            result: client.webhooks_at(&next).await,
        },
        Effect::Redeliver(id) => {
            let result = client.redeliver(&id).await;
            Action::WebhookRedelivered { id, result }
        }
        Effect::Recover { seq, id, request } => {
            let result = client.recover(&id, &request).await;
            Action::SubscriptionRecovered {
                seq,
                id,
                dry_run: request.dry_run,
                result,
            }
        }
    }
}

/// Run every effect as its own task; each sends its action back on `tx`.
fn spawn_all(effects: Vec<Effect>, client: &Client, tx: &UnboundedSender<Event>) {
    for effect in effects {
        let client = client.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let action = execute(effect, &client).await;
            // The receiver is gone only when the app is quitting.
            let _ = tx.send(Event::App(Box::new(action)));
        });
    }
}

/// Apply one event to the app; returns effects to run.
fn handle(app: &mut App, event: Event) -> io::Result<Vec<Effect>> {
    Ok(match event {
        Event::Tick => app.update(Action::Tick { now: Utc::now() }),
        Event::Terminal(TermEvent::Key(key)) if key.kind != KeyEventKind::Release => {
            app.update(Action::Key(key))
        }
        // Resizes need no state change: the redraw after this batch
        // picks up the new size.
        Event::Terminal(_) => Vec::new(),
        Event::App(action) => app.update(*action),
        Event::InputFailed(why) => {
            return Err(io::Error::other(format!(
                "cannot read terminal input: {why}"
            )))
        }
    })
}

/// Drive `app` on `terminal` until the user quits.
pub async fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    mut app: App,
    client: Client,
    mut events: EventLoop,
) -> io::Result<()> {
    let draw_err = |e: B::Error| io::Error::other(e.to_string());
    let tx = events.sender();
    spawn_all(app.update(Action::Init), &client, &tx);
    terminal
        .draw(|frame| ui::render(&app, frame))
        .map_err(draw_err)?;
    while let Some(event) = events.next().await {
        let effects = handle(&mut app, event)?;
        spawn_all(effects, &client, &tx);
        for _ in 0..MAX_BATCH {
            if app.should_quit() {
                break;
            }
            let Some(event) = events.try_next() else {
                break;
            };
            let effects = handle(&mut app, event)?;
            spawn_all(effects, &client, &tx);
        }
        if app.should_quit() {
            return Ok(());
        }
        terminal
            .draw(|frame| ui::render(&app, frame))
            .map_err(draw_err)?;
    }
    Ok(())
}
