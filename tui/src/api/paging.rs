//! Paged lists: every list of the API is a JSON array whose next page is
//! the `Link: <...>; rel="next"` of the answer. One page is read here, and
//! the next link found, checked and resolved, for every list the client
//! reads (subscriptions, webhooks, the attempt log).

use reqwest::header::{HeaderMap, LINK};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;

use super::{decode, ApiError, Client};

impl Client {
    /// `GET url`: the page's items and the URL of the next page, if the
    /// answer links one. A link back to `url` itself counts as none (it
    /// would loop forever).
    pub(super) async fn get_page<T: DeserializeOwned>(
        &self,
        url: Url,
    ) -> Result<(Vec<T>, Option<Url>), ApiError> {
        let (headers, body) = self.send_url(Method::GET, url.clone(), None::<&()>).await?;
        let items: Vec<T> = decode(&body)?;
        let next = self.next_link(&headers, &url)?.filter(|next| *next != url);
        Ok((items, next))
    }

    /// A next-page URL handed back by the caller (from a page read
    /// earlier), checked again: it must stay on this server.
    pub(super) fn same_origin(&self, url: &str) -> Result<Url, ApiError> {
        let url = Url::parse(url)
            .map_err(|e| ApiError::Decode(format!("bad next-page link {url:?}: {e}")))?;
        if url.origin() != self.base.origin() {
            return Err(ApiError::Decode(format!(
                "the next-page link {url} leaves {}",
                self.base
            )));
        }
        Ok(url)
    }

    /// The `rel="next"` target of an answer's `Link` headers, resolved
    /// against the URL that was asked (webhookd sends a path and query).
    /// A link to another server is refused: it would get the token.
    pub(super) fn next_link(
        &self,
        headers: &HeaderMap,
        asked: &Url,
    ) -> Result<Option<Url>, ApiError> {
        for value in headers.get_all(LINK) {
            let text = value
                .to_str()
                .map_err(|_| ApiError::Decode("a Link header is not ASCII".into()))?;
            let Some(target) = next_target(text) else {
                continue;
            };
            let next = asked
                .join(target)
                .map_err(|e| ApiError::Decode(format!("bad next-page link {target:?}: {e}")))?;
            if next.origin() != self.base.origin() {
                return Err(ApiError::Decode(format!(
                    "the next-page link {next} leaves {}",
                    self.base
                )));
            }
            return Ok(Some(next));
        }
        Ok(None)
    }
}

/// The target of the `rel="next"` link in one `Link` header value
/// (RFC 8288: `<target>; rel="next"`, several links separated by commas,
/// `rel` a space-separated list).
fn next_target(header: &str) -> Option<&str> {
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after.find('>')?;
        let target = &after[..end];
        let tail = &after[end + 1..];
        let params = &tail[..tail.find('<').unwrap_or(tail.len())];
        let is_next = params.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            let value = value.trim().trim_end_matches(',').trim().trim_matches('"');
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .split_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target);
        }
        rest = tail;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn the_next_link_is_found_among_others() {
        assert_eq!(
            next_target(r#"</subscriptions?limit=2&cursor=a>; rel="next""#),
            Some("/subscriptions?limit=2&cursor=a")
        );
        assert_eq!(
            next_target(r#"</a>; rel="prev", </b?x=1,2>; title="t"; rel="last next""#),
            Some("/b?x=1,2")
        );
        assert_eq!(next_target("</a>; rel=next"), Some("/a"));
        assert_eq!(next_target(r#"</a>; rel="prev""#), None);
        assert_eq!(next_target("garbage"), None);
    }

    #[test]
    fn a_next_link_to_another_server_is_refused() {
        let c = Client::new("http://127.0.0.1:9/prefix/", None).unwrap();
        let asked = c.url(&["subscriptions"], &[]).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            HeaderValue::from_static("</subscriptions?cursor=a>; rel=\"next\""),
        );
        assert_eq!(
            c.next_link(&headers, &asked).unwrap().unwrap().as_str(),
            "http://127.0.0.1:9/subscriptions?cursor=a"
        );
        headers.insert(
            LINK,
            HeaderValue::from_static("<http://evil.example/x>; rel=\"next\""),
        );
        assert!(matches!(
            c.next_link(&headers, &asked),
            Err(ApiError::Decode(_))
        ));
        assert_eq!(c.next_link(&HeaderMap::new(), &asked).unwrap(), None);
    }

    #[test]
    fn a_handed_back_link_must_stay_on_the_server() {
        let c = Client::new("http://127.0.0.1:9/", None).unwrap();
        assert!(c
            .same_origin("http://127.0.0.1:9/webhooks?cursor=a")
            .is_ok());
        assert!(matches!(
            c.same_origin("http://127.0.0.1:10/webhooks"),
            Err(ApiError::Decode(_))
        ));
        assert!(matches!(
            c.same_origin("/webhooks"),
            Err(ApiError::Decode(_))
        ));
    }
}
