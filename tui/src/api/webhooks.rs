//! The webhook calls of issue 15: the list of webhooks across
//! subscriptions (`GET /webhooks`, paged through `Link`), redelivering one
//! webhook and recovering a subscription's webhooks of a time window.

use chrono::{DateTime, Utc};
use reqwest::{Method, Url};
use serde::Deserialize;

use super::types::{
    RecoverCounts, RecoverError, RecoverRequest, Redelivery, WebhookPage, WebhookSummary,
};
use super::{decode, http_error, ApiError, Client};

/// The part of a recover error answer next to `error`.
#[derive(Debug, Deserialize)]
struct RecoverErrorExtra {
    #[serde(default)]
    oldest_available: Option<DateTime<Utc>>,
}

impl Client {
    /// `GET /webhooks?status=..&subscription_id=..&limit=N`: the first page
    /// of the webhooks with one of `statuses` (of one subscription when
    /// given), newest first. The page's `next` is the answer's
    /// `Link: <...>; rel="next"`, read with [`Client::webhooks_at`].
    pub async fn list_webhooks(
        &self,
        statuses: &[&str],
        subscription_id: Option<&str>,
        limit: u32,
    ) -> Result<WebhookPage, ApiError> {
        let mut query: Vec<(&str, String)> =
            statuses.iter().map(|s| ("status", s.to_string())).collect();
        if let Some(id) = subscription_id {
            query.push(("subscription_id", id.to_string()));
        }
        query.push(("limit", limit.to_string()));
        let url = self.url(&["webhooks"], &query)?;
        self.webhook_page(url).await
    }

    /// The page at `next`, the `next` of a [`WebhookPage`] read before.
    pub async fn webhooks_at(&self, next: &str) -> Result<WebhookPage, ApiError> {
        let url = self.same_origin(next)?;
        self.webhook_page(url).await
    }

    async fn webhook_page(&self, url: Url) -> Result<WebhookPage, ApiError> {
        let (items, next) = self.get_page::<WebhookSummary>(url).await?;
        Ok(WebhookPage {
            items,
            next: next.map(String::from),
        })
    }

    /// `POST /webhooks/{id}/redeliver`: deliver it again (202). 404: no
    /// such webhook (or its subscription is gone); 409: not final yet, or
    /// its subscription is disabled; 410: its payload aged out.
    pub async fn redeliver(&self, webhook_id: &str) -> Result<Redelivery, ApiError> {
        let body = self
            .send(
                Method::POST,
                &["webhooks", webhook_id, "redeliver"],
                &[],
                None::<&()>,
            )
            .await?;
        decode(&body)
    }

    /// `POST /subscriptions/{id}/recover`: redeliver (or, on a dry run,
    /// count) the subscription's webhooks of a window. A `since` before the
    /// retention is a 422 whose answer says the oldest time available.
    pub async fn recover(
        &self,
        subscription_id: &str,
        request: &RecoverRequest,
    ) -> Result<RecoverCounts, RecoverError> {
        let url = self.url(&["subscriptions", subscription_id, "recover"], &[])?;
        let (status, _, body) = self.exchange(Method::POST, url, Some(request)).await?;
        if status.is_success() {
            return Ok(decode(&body)?);
        }
        let oldest_available = serde_json::from_slice::<RecoverErrorExtra>(&body)
            .ok()
            .and_then(|extra| extra.oldest_available);
        Err(RecoverError {
            error: http_error(status, &body),
            oldest_available,
        })
    }
}
