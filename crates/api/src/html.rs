//! The plain pages a browser sees during SSO, from the gateway (errors) and
//! from the client's loopback listener (the outcome).

/// `text` made safe for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A minimal HTML page with `title` and `message`, both escaped.
pub fn page(title: &str, message: &str) -> String {
    page_with(title, message, "")
}

/// [`page`] with more markup after the message: `html` is the caller's own
/// (forms), inserted as is, so every value in it must be [`escape`]d.
pub fn page_with(title: &str, message: &str, html: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Postern: {title}</title></head>\
         <body style=\"font-family: sans-serif; max-width: 40em; margin: 4em auto\">\
         <h1>{title}</h1><p>{message}</p>{html}</body></html>",
        title = escape(title),
        message = escape(message),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_is_escaped() {
        let html = super::page("a<b", "\"x\" & <script>");
        assert!(html.contains("a&lt;b"));
        assert!(html.contains("&quot;x&quot; &amp; &lt;script&gt;"));
        assert!(!html.contains("<script>"));
    }
}
