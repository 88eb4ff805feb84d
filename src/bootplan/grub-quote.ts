/**
 * Quoting for grub.cfg. Inside single quotes GRUB takes every character literally (no escapes at
 * all), so a single quote is written by closing the quote, an escaped quote, and reopening: '\''.
 * Used as the nunjucks `grub_quote` filter; nunjucks' own autoescape is HTML and stays off.
 */
export function grubQuote(value: string | number): string {
  const text = String(value);
  if (/[\0\r\n]/.test(text)) throw new Error("a GRUB word cannot contain NUL or line breaks");
  return `'${text.replaceAll("'", "'\\''")}'`;
}

/** Several words, each quoted, separated by spaces (the arguments of one GRUB command). */
export function grubQuoteWords(values: readonly (string | number)[]): string {
  return values.map(grubQuote).join(" ");
}
