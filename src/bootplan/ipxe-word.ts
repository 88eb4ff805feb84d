/**
 * Words for an iPXE script. iPXE has no quoting: a line is split at whitespace, `${...}` is expanded as a
 * setting, and the tokens `||` and `&&` chain commands. A word that could change meaning is refused
 * rather than escaped (the config schema already keeps such characters out of kernel arguments).
 * Used as the nunjucks `ipxe_word` and `ipxe_words` filters.
 */
export function ipxeWord(value: string | number): string {
  const text = String(value);
  if (text.length === 0) throw new Error("an iPXE word cannot be empty");
  if (/[\s$]/.test(text) || /[^\x21-\x7e]/.test(text))
    throw new Error("an iPXE word cannot contain whitespace, $ or non-printable characters");
  if (text === "||" || text === "&&") throw new Error(`${text} is an iPXE operator, not a word`);
  return text;
}

export function ipxeWords(values: readonly (string | number)[]): string {
  return values.map(ipxeWord).join(" ");
}
