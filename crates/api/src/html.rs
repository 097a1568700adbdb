//! The plain pages a browser sees during SSO, from the gateway (errors) and
//! from the client's loopback listener (the outcome).

/// A minimal HTML page with `title` and `message`, both escaped.
pub fn page(title: &str, message: &str) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Postern: {title}</title></head>\
         <body style=\"font-family: sans-serif; max-width: 40em; margin: 4em auto\">\
         <h1>{title}</h1><p>{message}</p></body></html>",
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
