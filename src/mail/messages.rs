//! The mail an event calls for, made from the event itself and the
//! templates in `templates/`: plain text and HTML, the display name escaped
//! in HTML and never in a header.

use accountable_domain::events::{IssuedToken, Recipient};
use accountable_domain::UserEvent;
use chrono::{DateTime, Duration, Utc};
use handlebars::Handlebars;
use lettre::message::header::ContentTransferEncoding;
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::Message;
use serde_json::json;
use std::sync::OnceLock;

/// The messages one event can call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The link that verifies a new account's address.
    Verify,
    /// The link that sets a new password.
    Reset,
    /// The link that confirms a new address, sent to it.
    ConfirmChange,
    /// The notice to the old address that a change was asked for.
    ChangeNotice,
    /// The notice that someone tried to sign up with a taken address.
    SignupNotice,
}

impl Kind {
    pub const ALL: [Self; 5] = [
        Self::Verify,
        Self::Reset,
        Self::ConfirmChange,
        Self::ChangeNotice,
        Self::SignupNotice,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Reset => "reset",
            Self::ConfirmChange => "confirm-change",
            Self::ChangeNotice => "change-notice",
            Self::SignupNotice => "signup-notice",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The messages a stored event of `event_type` calls for.
    pub fn due_for(event_type: &str) -> &'static [Self] {
        match event_type {
            "UserRegistered" | "EmailVerificationRequested" => &[Self::Verify],
            "PasswordResetRequested" => &[Self::Reset],
            "EmailChangeRequested" => &[Self::ConfirmChange, Self::ChangeNotice],
            "RegistrationAttempted" => &[Self::SignupNotice],
            _ => &[],
        }
    }

    fn subject(self) -> &'static str {
        match self {
            Self::Verify => "Verify your email address",
            Self::Reset => "Reset your password",
            Self::ConfirmChange => "Confirm your new email address",
            Self::ChangeNotice => "Your account's email address is being changed",
            Self::SignupNotice => "Someone tried to sign up with your address",
        }
    }

    fn templates(self) -> (&'static str, &'static str) {
        match self {
            Self::Verify => (
                include_str!("templates/verify.txt"),
                include_str!("templates/verify.html"),
            ),
            Self::Reset => (
                include_str!("templates/reset.txt"),
                include_str!("templates/reset.html"),
            ),
            Self::ConfirmChange => (
                include_str!("templates/confirm-change.txt"),
                include_str!("templates/confirm-change.html"),
            ),
            Self::ChangeNotice => (
                include_str!("templates/change-notice.txt"),
                include_str!("templates/change-notice.html"),
            ),
            Self::SignupNotice => (
                include_str!("templates/signup-notice.txt"),
                include_str!("templates/signup-notice.html"),
            ),
        }
    }
}

/// The templates, compiled once: plain text without escaping, HTML with
/// every value escaped (handlebars' default), in one layout.
struct Templates {
    text: Handlebars<'static>,
    html: Handlebars<'static>,
}

const LAYOUT: &str = "layout";

fn templates() -> &'static Templates {
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let mut text = Handlebars::new();
        text.set_strict_mode(true);
        text.register_escape_fn(handlebars::no_escape);
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        let mut compiled =
            html.register_template_string(LAYOUT, include_str!("templates/layout.html"));
        for kind in Kind::ALL {
            let (plain, rich) = kind.templates();
            compiled = compiled
                .and_then(|()| text.register_template_string(kind.as_str(), plain))
                .and_then(|()| html.register_template_string(kind.as_str(), rich));
        }
        // The templates are part of the binary, and a unit test renders
        // every one: a broken template cannot ship.
        if let Err(error) = compiled {
            tracing::error!(error = %error, "a mail template does not compile");
        }
        Templates { text, html }
    })
}

/// How long a notice (which carries no link of its own) stays worth
/// sending: a mailer that starts on an old store does not mail the past.
const NOTICE_TTL: Duration = Duration::hours(24);

/// What messages are made with.
#[derive(Debug, Clone)]
pub struct Letterhead {
    pub from: Mailbox,
    /// The frontend's base URL, without a trailing slash.
    pub public_url: String,
    /// The right-hand side of every `Message-ID`.
    pub domain: String,
}

/// Why an event's message is not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsendable {
    /// The user was erased: the address and the token are gone.
    #[error("the recipient was erased")]
    Erased,
    #[error("the link expired before it could be sent")]
    Expired,
    #[error("the event does not call for this message")]
    NotForThisEvent,
    #[error("the address cannot be written in a header: {0}")]
    BadAddress(String),
    #[error("a template did not render: {0}")]
    Template(String),
}

/// The one message of `kind` that `event` (the `sequence`th of `user_id`,
/// recorded at `recorded_at`) calls for, as of `now`.
pub fn compose(
    letterhead: &Letterhead,
    kind: Kind,
    event: &UserEvent,
    id: (uuid::Uuid, i64),
    recorded_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Message, Unsendable> {
    let base = &letterhead.public_url;
    let link = |path: &str, issued: &IssuedToken| -> Result<String, Unsendable> {
        if issued.expires_at <= now {
            return Err(Unsendable::Expired);
        }
        let token = issued.token.as_ref().ok_or(Unsendable::Erased)?;
        Ok(format!("{base}/{path}?token={}", token.expose()))
    };
    let fresh = || {
        if now - recorded_at > NOTICE_TTL {
            Err(Unsendable::Expired)
        } else {
            Ok(())
        }
    };
    let (to, name, link): (&str, &str, String) = match (kind, event) {
        (Kind::Verify, UserEvent::UserRegistered(e)) => {
            let to = e.personal.as_ref().ok_or(Unsendable::Erased)?;
            // Registrations from before verification carry no link.
            let issued = e.verification.as_ref().ok_or(Unsendable::NotForThisEvent)?;
            (
                to.email.as_str(),
                to.display_name.as_str(),
                link("verify-email", issued)?,
            )
        }
        (Kind::Verify, UserEvent::EmailVerificationRequested(e)) => {
            let to = recipient(e.personal.as_ref())?;
            (
                to.email.as_str(),
                to.display_name.as_str(),
                link("verify-email", &e.issued)?,
            )
        }
        (Kind::Reset, UserEvent::PasswordResetRequested(e)) => {
            let to = recipient(e.personal.as_ref())?;
            (
                to.email.as_str(),
                to.display_name.as_str(),
                link("reset-password", &e.issued)?,
            )
        }
        (Kind::ConfirmChange, UserEvent::EmailChangeRequested(e)) => {
            let change = e.personal.as_ref().ok_or(Unsendable::Erased)?;
            let link = link("confirm-email", &e.issued)?;
            (change.email.as_str(), change.display_name.as_str(), link)
        }
        (Kind::ChangeNotice, UserEvent::EmailChangeRequested(e)) => {
            fresh()?;
            let change = e.personal.as_ref().ok_or(Unsendable::Erased)?;
            let link = format!("{base}/forgot-password");
            (
                change.previous_email.as_str(),
                change.display_name.as_str(),
                link,
            )
        }
        (Kind::SignupNotice, UserEvent::RegistrationAttempted(e)) => {
            fresh()?;
            let to = recipient(e.personal.as_ref())?;
            let link = format!("{base}/forgot-password");
            (to.email.as_str(), to.display_name.as_str(), link)
        }
        _ => return Err(Unsendable::NotForThisEvent),
    };
    let values = json!({"name": name, "link": link, "subject": kind.subject()});
    let render = |registry: &Handlebars<'_>, name: &str, values: &serde_json::Value| {
        registry
            .render(name, values)
            .map_err(|error| Unsendable::Template(error.to_string()))
    };
    let templates = templates();
    let text = render(&templates.text, kind.as_str(), &values)?;
    let body = render(&templates.html, kind.as_str(), &values)?;
    let html = render(
        &templates.html,
        LAYOUT,
        &json!({"subject": kind.subject(), "body": body}),
    )?;
    // The address alone: a display name is the user's to choose, and stays
    // out of every header.
    let to: Mailbox = to
        .parse()
        .map_err(|_| Unsendable::BadAddress(kind.as_str().to_owned()))?;
    Message::builder()
        .from(letterhead.from.clone())
        .to(to)
        .subject(kind.subject())
        .message_id(Some(message_id(id, kind, &letterhead.domain)))
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::plain(readable(text)))
                .singlepart(SinglePart::html(readable(html))),
        )
        .map_err(|error| Unsendable::BadAddress(error.to_string()))
}

/// A body as 7-bit text when it is one (ASCII, lines of at most 998
/// characters: RFC 5322's limit, where lettre would wrap at 76), so that a
/// link stays whole in the message as written (an `.eml` file read as
/// text, in development); quoted-printable otherwise.
fn readable(text: String) -> Body {
    const MAX_LINE: usize = 998;
    let lines = text.replace("\r\n", "\n");
    let seven_bit = lines
        .bytes()
        .all(|b| b.is_ascii() && b != b'\0' && b != b'\r')
        && lines.lines().all(|line| line.len() <= MAX_LINE);
    if seven_bit {
        let crlf = lines.replace('\n', "\r\n");
        Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::SevenBit)
    } else {
        Body::new(text)
    }
}

/// The `Message-ID` of the message of `kind` that event `id` calls for:
/// the same at every attempt, so a receiving server can drop a duplicate.
pub fn message_id((user_id, sequence): (uuid::Uuid, i64), kind: Kind, domain: &str) -> String {
    format!(
        "<{}.{sequence}.{}@{domain}>",
        user_id.simple(),
        kind.as_str()
    )
}

fn recipient(personal: Option<&Recipient>) -> Result<&Recipient, Unsendable> {
    personal.ok_or(Unsendable::Erased)
}

#[cfg(test)]
mod tests {
    use accountable_domain::events::{EmailVerificationRequested, RegistrationAttempted};
    use accountable_domain::values::{DisplayName, Email};
    use accountable_domain::MailToken;

    use super::*;

    /// As long as a real token: its link is longer than a QP line.
    const TOKEN: &str =
        "01a235a8e97b754d8a6358fb6a8755b94LvePFvrGleSOuyJedLF_1DBsvVN2GGac2NdpJ2Y13g";

    fn letterhead() -> Letterhead {
        Letterhead {
            from: "Accountable <no-reply@example.test>".parse().unwrap(),
            public_url: "https://app.example.test".into(),
            domain: "example.test".into(),
        }
    }

    fn requested(name: &str, expires_at: DateTime<Utc>) -> UserEvent {
        UserEvent::EmailVerificationRequested(EmailVerificationRequested {
            at: Utc::now(),
            personal: Some(Recipient {
                email: Email::parse("ada@example.test").unwrap(),
                display_name: DisplayName::parse(name).unwrap(),
            }),
            issued: IssuedToken {
                token_hash: "h".into(),
                token: Some(MailToken::new(TOKEN.into())),
                expires_at,
            },
        })
    }

    fn formatted(message: &Message) -> String {
        String::from_utf8(message.formatted()).unwrap()
    }

    #[test]
    fn a_verification_mail_carries_its_link_and_a_stable_message_id() {
        let now = Utc::now();
        let id = (uuid::Uuid::nil(), 2);
        let event = requested("Ada", now + Duration::hours(1));
        let message = compose(&letterhead(), Kind::Verify, &event, id, now, now).unwrap();
        let text = formatted(&message);
        // Whole, on one line, in the message as written.
        assert!(
            text.contains(&format!(
                "https://app.example.test/verify-email?token={TOKEN}\r\n"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "Message-ID: {}",
            message_id(id, Kind::Verify, "example.test")
        )));
        assert!(text.contains("To: ada@example.test"), "{text}");
    }

    #[test]
    fn a_display_name_is_escaped_in_html_and_kept_out_of_headers() {
        let now = Utc::now();
        let name = "<b>Eve</b> & \"co\"";
        let event = requested(name, now + Duration::hours(1));
        let message = compose(
            &letterhead(),
            Kind::Verify,
            &event,
            (uuid::Uuid::nil(), 2),
            now,
            now,
        )
        .unwrap();
        let headers = message.headers().to_string();
        assert!(!headers.contains("Eve"), "{headers}");
        let values = json!({"name": name, "link": "https://x.test/?a=1&b=2"});
        let html = templates()
            .html
            .render(Kind::Verify.as_str(), &values)
            .unwrap();
        assert!(
            html.contains("https://x.test/?a&#x3D;1&amp;b&#x3D;2") || html.contains("a=1&amp;b"),
            "{html}"
        );
        assert!(
            html.contains("&lt;b&gt;Eve&lt;/b&gt; &amp; &quot;co&quot;"),
            "{html}"
        );
        assert!(!html.contains("<b>Eve"), "{html}");
    }

    #[test]
    fn an_expired_link_or_an_erased_user_gets_no_mail() {
        let now = Utc::now();
        let id = (uuid::Uuid::nil(), 2);
        let expired = requested("Ada", now - Duration::seconds(1));
        assert_eq!(
            compose(&letterhead(), Kind::Verify, &expired, id, now, now).unwrap_err(),
            Unsendable::Expired
        );
        let erased = UserEvent::RegistrationAttempted(RegistrationAttempted {
            at: now,
            personal: None,
        });
        assert_eq!(
            compose(&letterhead(), Kind::SignupNotice, &erased, id, now, now).unwrap_err(),
            Unsendable::Erased
        );
    }

    #[test]
    fn every_template_renders() {
        let now = Utc::now();
        for kind in Kind::ALL {
            let (text, html) = kind.templates();
            assert!(
                text.contains("{{link}}") && html.contains("{{link}}"),
                "{kind:?}"
            );
            let values = json!({"name": "Ada", "link": "https://x.test/l", "subject": "s"});
            templates().text.render(kind.as_str(), &values).unwrap();
            templates().html.render(kind.as_str(), &values).unwrap();
        }
        let event = requested("Ada", now + Duration::hours(1));
        compose(
            &letterhead(),
            Kind::Verify,
            &event,
            (uuid::Uuid::nil(), 2),
            now,
            now,
        )
        .unwrap();
    }
}
