//! Safe markdown rendering for skills (and, later, model output): raw HTML in
//! the source is shown as text, links and images only keep http(s) targets.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, html};

fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") || lower.starts_with('#') {
        url
    } else {
        CowStr::Borrowed("#")
    }
}

/// Renders markdown to HTML with no raw HTML passing through.
pub fn render(md: &str) -> String {
    let parser =
        Parser::new_ext(md, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH).map(|ev| {
            match ev {
                Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
                Event::Start(Tag::Link {
                    link_type,
                    dest_url,
                    title,
                    id,
                }) => Event::Start(Tag::Link {
                    link_type,
                    dest_url: safe_url(dest_url),
                    title,
                    id,
                }),
                Event::Start(Tag::Image {
                    link_type,
                    dest_url,
                    title,
                    id,
                }) => Event::Start(Tag::Image {
                    link_type,
                    dest_url: safe_url(dest_url),
                    title,
                    id,
                }),
                other => other,
            }
        });
    let mut out = String::with_capacity(md.len() * 2);
    html::push_html(&mut out, parser);
    out
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn raw_html_is_escaped_and_bad_links_neutralised() {
        let out = render(
            "# T\n\n<script>alert(1)</script>\n\ntext <img src=x onerror=alert(1)> [x](javascript:alert(1)) [ok](https://pve.proxmox.com/)\n\n```sh\necho '<b>'\n```\n",
        );
        assert!(!out.contains("<script>"), "{out}");
        assert!(out.contains("&lt;script&gt;"), "{out}");
        assert!(!out.contains("<img"), "{out}");
        assert!(!out.contains("javascript:"), "{out}");
        assert!(out.contains("href=\"https://pve.proxmox.com/\""), "{out}");
        assert!(out.contains("&lt;b&gt;"), "{out}");
    }
}
