//! A small PDF writer for documents of text (ISO 32000-1): A4 pages of lines in one font,
//! wrapped and paged, with the document's title and language.
//!
//! Text in Chinese and English is set in Adobe's standard Traditional Chinese font
//! `MSung-Light` through the predefined `UniCNS-UCS2-H` CMap (ISO 32000-1 §9.7.5.2,
//! Table 118), so the file carries no font: each reader uses its own font for the
//! Adobe-CNS1 collection. The text is written as UCS-2 code units, which also makes it
//! searchable and copyable. Characters outside the Basic Multilingual Plane are written as
//! U+FFFD.

use std::fmt::Write as _;

/// A4 in points.
const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN: f32 = 56.0;

/// The width this writer gives a character, in ems: Latin letters and digits are
/// half-width in the Adobe-CNS1 fonts (CIDs 1–95), ideographs full width.
fn em_width(c: char) -> f32 {
    if (' '..='~').contains(&c) { 0.5 } else { 1.0 }
}

/// A document being written.
pub struct Pdf {
    pages: Vec<String>,
    page: String,
    /// The baseline of the next line, from the page's bottom.
    y: f32,
}

impl Default for Pdf {
    fn default() -> Pdf {
        Pdf::new()
    }
}

impl Pdf {
    /// An empty document.
    pub fn new() -> Pdf {
        Pdf {
            pages: Vec::new(),
            page: String::new(),
            y: PAGE_HEIGHT - MARGIN,
        }
    }

    /// Text at `size` points, indented by `indent` points, wrapped to the page's width.
    pub fn text(&mut self, text: &str, size: f32, indent: f32) {
        let room = (PAGE_WIDTH - 2.0 * MARGIN - indent) / size;
        for line in wrap(text, room) {
            self.line(&line, size, indent);
        }
    }

    /// Space of `points` before what comes next.
    pub fn gap(&mut self, points: f32) {
        self.y -= points;
    }

    fn line(&mut self, line: &str, size: f32, indent: f32) {
        let leading = size * 1.4;
        if self.y - leading < MARGIN {
            self.pages.push(std::mem::take(&mut self.page));
            self.y = PAGE_HEIGHT - MARGIN;
        }
        self.y -= leading;
        let _ = writeln!(
            self.page,
            "BT /F1 {size} Tf {:.1} {:.1} Td <{}> Tj ET",
            MARGIN + indent,
            self.y,
            ucs2_hex(line)
        );
    }

    /// The finished file, titled `title`, in language `lang` (BCP 47).
    pub fn finish(mut self, title: &str, lang: &str) -> Vec<u8> {
        if !self.page.is_empty() || self.pages.is_empty() {
            self.pages.push(std::mem::take(&mut self.page));
        }
        // Objects: 1 catalog, 2 page tree, 3 font, 4 CID font, 5 font descriptor, 6 info,
        // then each page and its content stream.
        let first_page = 7;
        let kids: Vec<String> = (0..self.pages.len())
            .map(|i| format!("{} 0 R", first_page + 2 * i))
            .collect();
        let mut objects: Vec<Vec<u8>> = vec![
            format!(
                "<< /Type /Catalog /Pages 2 0 R /Lang <{}> /ViewerPreferences << /DisplayDocTitle true >> >>",
                utf16_hex(lang)
            )
            .into_bytes(),
            format!(
                "<< /Type /Pages /Kids [{}] /Count {} >>",
                kids.join(" "),
                self.pages.len()
            )
            .into_bytes(),
            b"<< /Type /Font /Subtype /Type0 /BaseFont /MSung-Light /Encoding /UniCNS-UCS2-H /DescendantFonts [4 0 R] >>".to_vec(),
            b"<< /Type /Font /Subtype /CIDFontType0 /BaseFont /MSung-Light /CIDSystemInfo << /Registry (Adobe) /Ordering (CNS1) /Supplement 0 >> /FontDescriptor 5 0 R /DW 1000 /W [1 95 500] >>".to_vec(),
            b"<< /Type /FontDescriptor /FontName /MSung-Light /Flags 6 /FontBBox [-160 -249 1015 1071] /ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 880 /StemV 93 >>".to_vec(),
            format!(
                "<< /Title <{}> /Producer (Civitas) /CreationDate ({}) >>",
                utf16_hex(title),
                pdf_date()
            )
            .into_bytes(),
        ];
        for (i, content) in self.pages.iter().enumerate() {
            let contents = first_page + 2 * i + 1;
            objects.push(
                format!(
                    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] /Resources << /Font << /F1 3 0 R >> >> /Contents {contents} 0 R >>"
                )
                .into_bytes(),
            );
            let mut stream = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
            stream.extend_from_slice(content.as_bytes());
            stream.extend_from_slice(b"\nendstream");
            objects.push(stream);
        }
        // A binary comment after the header tells transfer programs the file is binary.
        let mut out = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
        let mut offsets = Vec::with_capacity(objects.len());
        for (i, body) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
            out.extend_from_slice(body);
            out.extend_from_slice(b"\nendobj\n");
        }
        let xref = out.len();
        let mut table = format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
        for o in offsets {
            let _ = writeln!(table, "{o:010} 00000 n ");
        }
        let _ = write!(
            table,
            "trailer\n<< /Size {} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        );
        out.extend_from_slice(table.as_bytes());
        out
    }
}

/// `text` in lines of at most `room` ems, broken at spaces where there are any (English)
/// and between any two characters otherwise (Chinese has no spaces between words).
fn wrap(text: &str, room: f32) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        let mut width = 0.0;
        for word in paragraph.split_inclusive(' ') {
            let w: f32 = word.chars().map(em_width).sum();
            if width + w > room && !line.is_empty() {
                lines.push(std::mem::take(&mut line).trim_end().to_string());
                width = 0.0;
            }
            if w > room {
                // A word longer than the line (or a run of ideographs): broken anywhere.
                for c in word.chars() {
                    if width + em_width(c) > room && !line.is_empty() {
                        lines.push(std::mem::take(&mut line));
                        width = 0.0;
                    }
                    line.push(c);
                    width += em_width(c);
                }
            } else {
                line.push_str(word);
                width += w;
            }
        }
        lines.push(line.trim_end().to_string());
    }
    lines
}

/// Each character as a big-endian UCS-2 code unit, in hex.
fn ucs2_hex(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 4);
    for c in text.chars() {
        let unit = u16::try_from(u32::from(c)).unwrap_or(0xFFFD);
        let _ = write!(out, "{unit:04X}");
    }
    out
}

/// A text string (ISO 32000-1 §7.9.2.2): UTF-16BE with its byte-order mark, in hex.
fn utf16_hex(text: &str) -> String {
    let mut out = String::from("FEFF");
    for unit in text.encode_utf16() {
        let _ = write!(out, "{unit:04X}");
    }
    out
}

/// Now, as a PDF date (`D:YYYYMMDDHHmmSSZ`).
fn pdf_date() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "D:{:04}{:02}{:02}{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each cross-reference entry points at its object, the trailer at the table, and the
    /// text comes back from the content streams as it went in.
    #[test]
    fn the_file_is_well_formed_and_keeps_the_text() {
        let mut pdf = Pdf::new();
        pdf.text("我的資料 My data", 16.0, 0.0);
        for i in 0..120 {
            pdf.text(
                &format!("姓名 name {i}: 王小明 Wang Hsiao-ming"),
                10.0,
                12.0,
            );
        }
        let bytes = pdf.finish("我的資料", "zh-TW");
        assert!(bytes.starts_with(b"%PDF-1.7\n"));
        assert!(bytes.ends_with(b"%%EOF\n"));
        let text = String::from_utf8_lossy(&bytes);
        let start: usize = text
            .rsplit("startxref\n")
            .next()
            .and_then(|t| t.lines().next())
            .and_then(|n| n.parse().ok())
            .expect("startxref");
        // Everything after the header's binary comment is ASCII: offsets count bytes.
        let table = std::str::from_utf8(&bytes[start..]).expect("an ASCII table");
        assert!(table.starts_with("xref\n0 "));
        let entries: Vec<usize> = table
            .lines()
            .skip(3)
            .take_while(|l| l.ends_with(" n "))
            .map(|l| l[..10].parse().expect("an offset"))
            .collect();
        assert!(entries.len() > 8, "several pages: {}", entries.len());
        for (i, offset) in entries.iter().enumerate() {
            let head = format!("{} 0 obj\n", i + 1);
            assert_eq!(&bytes[*offset..offset + head.len()], head.as_bytes());
        }
        // Every stream's length is its length.
        for part in text.split("<< /Length ").skip(1) {
            let (n, rest) = part.split_once(" >>\nstream\n").expect("a stream");
            let n: usize = n.parse().expect("a length");
            assert!(rest[n..].starts_with("\nendstream"));
        }
        let shown: String = text
            .lines()
            .filter_map(|l| l.split_once(" Td <"))
            .map(|(_, hex)| {
                let hex = hex.trim_end_matches("> Tj ET");
                (0..hex.len())
                    .step_by(4)
                    .map(|i| u16::from_str_radix(&hex[i..i + 4], 16).expect("hex"))
                    .map(|u| char::from_u32(u32::from(u)).expect("a character"))
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(shown.starts_with("我的資料 My data\n"));
        assert!(shown.contains("姓名 name 119: 王小明 Wang Hsiao-ming"));
        assert!(text.contains(&format!("/Title <{}>", utf16_hex("我的資料"))));
    }

    #[test]
    fn long_lines_wrap_at_spaces_or_between_ideographs() {
        let lines = wrap("one two three four", 4.5);
        assert_eq!(lines, ["one two", "three", "four"]);
        let lines = wrap("一二三四五六七", 3.0);
        assert_eq!(lines, ["一二三", "四五六", "七"]);
        assert_eq!(wrap("", 5.0), [""]);
    }
}
