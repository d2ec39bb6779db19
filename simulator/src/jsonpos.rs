//! Finds where a value sits in the raw request body, so that a JSON_PARSER_ERROR can say
//! "at [line:1, column:N]" like Salesforce's parser does. serde_json does not keep offsets
//! of parsed values, and this runs only on the error path, so a small scanner suffices.

/// Byte span of the value of `key` in element `record` of the top-level `"records"` array.
pub fn locate(body: &[u8], record: usize, key: &str) -> Option<(usize, usize)> {
    let mut s = Scanner { b: body, i: 0 };
    s.expect(b'{')?;
    loop {
        s.ws();
        if s.peek()? == b'}' {
            return None;
        }
        let k = s.string_value()?;
        s.ws();
        s.expect(b':')?;
        s.ws();
        if k == "records" {
            s.expect(b'[')?;
            let mut idx = 0;
            loop {
                s.ws();
                if s.peek()? == b']' {
                    return None;
                }
                if idx == record {
                    return s.member_span(key);
                }
                s.skip_value()?;
                s.ws();
                if s.bump()? == b']' {
                    return None;
                }
                idx += 1;
            }
        }
        s.skip_value()?;
        s.ws();
        if s.bump()? == b'}' {
            return None;
        }
    }
}

/// 1-based line and column of the character just after byte offset `end`.
pub fn line_column(body: &[u8], end: usize) -> (usize, usize) {
    let end = end.min(body.len());
    let before = &body[..end];
    let line = 1 + before.iter().filter(|&&c| c == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |p| p + 1);
    (line, end - line_start + 1)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.bump()? == c).then_some(())
    }

    /// Skips a string starting at the opening quote; returns its raw span including quotes.
    fn skip_string(&mut self) -> Option<(usize, usize)> {
        let start = self.i;
        if self.bump()? != b'"' {
            return None;
        }
        loop {
            match self.bump()? {
                b'\\' => {
                    self.bump()?;
                }
                b'"' => return Some((start, self.i)),
                _ => {}
            }
        }
    }

    fn string_value(&mut self) -> Option<String> {
        let (a, b) = self.skip_string()?;
        serde_json::from_slice(&self.b[a..b]).ok()
    }

    fn skip_value(&mut self) -> Option<(usize, usize)> {
        self.ws();
        let start = self.i;
        match self.peek()? {
            b'"' => {
                self.skip_string()?;
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
                ) {
                    self.i += 1;
                }
            }
        }
        Some((start, self.i))
    }

    /// In the object starting here, the span of the value of `key` (the last one if repeated).
    fn member_span(&mut self, key: &str) -> Option<(usize, usize)> {
        self.expect(b'{')?;
        let mut found = None;
        loop {
            self.ws();
            if self.peek()? == b'}' {
                return found;
            }
            let k = self.string_value()?;
            self.expect(b':')?;
            let span = self.skip_value()?;
            if k == key {
                found = Some(span);
            }
            self.ws();
            if self.bump()? == b'}' {
                return found;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_field_of_the_nth_record() {
        let body = br#"{"allOrNone":false,"records":[{"a":{"x":[1,"]"]},"B":"x"},{"B":"2017-13-45","C":1}]}"#;
        let (start, end) = locate(body, 1, "B").unwrap();
        assert_eq!(&body[start..end], br#""2017-13-45""#);
        assert_eq!(line_column(body, end), (1, end + 1));
        assert_eq!(locate(body, 0, "C"), None);
        assert_eq!(locate(body, 2, "B"), None);
    }

    #[test]
    fn counts_lines() {
        let body = b"{\n  \"records\": [\n {\"B\": true}]}";
        let (_, end) = locate(body, 0, "B").unwrap();
        assert_eq!(line_column(body, end), (3, 12));
    }
}
