// kommunchat: finding Swedish personnummer and samordningsnummer in free text.
// A port of src/domain/personnummer.rs (keep the two in step).
//
// Accepted forms: YYMMDD-NNNC, YYMMDD+NNNC (the '+' from the year the person
// turns 100), YYMMDDNNNC, YYYYMMDD-NNNC, YYYYMMDDNNNC. The date must exist (a
// samordningsnummer has 60 added to the day) and the check digit must satisfy
// the Luhn algorithm over the ten-digit form. The number must stand alone: not
// part of a longer run of digits. A bare ten-digit number starting with 07 is
// read as a mobile phone number; written 070123-4567 it is still found.

const isDigit = (ch) => ch >= '0' && ch <= '9';
const num = (s) => Number(s);

/** Luhn check over ten digits (weights 2, 1, 2, 1, …). */
export function luhnOk(ten) {
  let sum = 0;
  for (let i = 0; i < 10; i++) {
    const v = Number(ten[i]) * (i % 2 === 0 ? 2 : 1);
    sum += v > 9 ? v - 9 : v;
  }
  return sum % 10 === 0;
}

function leap(y) { return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0; }
function dateExists(year, month, day) {
  if (month < 1 || month > 12 || day < 1) return false;
  const days = [31, leap(year) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
  return day <= days;
}
function dateKind(year, month, day) {
  if (dateExists(year, month, day)) return 'personnummer';
  if (day > 60 && dateExists(year, month, day - 60)) return 'samordningsnummer';
  return null;
}

/** One candidate: `date` 6 or 8 digits, `sep` '-', '+' or null, `tail` 4 digits. */
function check(date, sep, tail, referenceYear) {
  const ten = date.slice(-6) + tail;
  if (!luhnOk(ten)) return null;
  const month = num(date.slice(-4, -2));
  const day = num(date.slice(-2));
  let year;
  if (date.length === 8) {
    if (sep === '+') return null;
    year = num(date.slice(0, 4));
  } else {
    // The most recent year with these two digits not after the reference
    // year; a '+' means a hundred years earlier.
    const yy = num(date.slice(0, 2));
    const century = referenceYear - (((referenceYear % 100) + 100) % 100);
    year = century + yy;
    if (year > referenceYear) year -= 100;
    if (sep === '+') year -= 100;
  }
  const kind = dateKind(year, month, day);
  if (!kind) return null;
  const canonical = `${String(year).padStart(4, '0')}${String(month).padStart(2, '0')}${String(day).padStart(2, '0')}${tail}`;
  return { kind, canonical };
}

/**
 * Every personnummer and samordningsnummer in `text`, as
 * `{ start, end, kind, canonical }` (string indices). `referenceYear` is the
 * year the text was written (for two-digit years); the current year by default.
 */
export function findPersonnummer(text, referenceYear = new Date().getFullYear()) {
  const s = String(text ?? '');
  const out = [];
  let i = 0;
  while (i < s.length) {
    if (!isDigit(s[i])) { i++; continue; }
    const start = i;
    while (i < s.length && isDigit(s[i])) i++;
    const run = s.slice(start, i);
    // A run glued to a preceding digit group ("12-3456789012") is not a number of its own.
    if (start >= 2 && (s[start - 1] === '-' || s[start - 1] === '+') && isDigit(s[start - 2])) continue;
    let found = null;
    if (run.length === 10 && !run.startsWith('07')) {
      const f = check(run.slice(0, 6), null, run.slice(6), referenceYear);
      if (f) found = { ...f, end: i };
    } else if (run.length === 12) {
      const f = check(run.slice(0, 8), null, run.slice(8), referenceYear);
      if (f) found = { ...f, end: i };
    } else if ((run.length === 6 || run.length === 8) && i + 5 <= s.length && (s[i] === '-' || s[i] === '+')) {
      const sep = s[i];
      const tailEnd = i + 5;
      const tail = s.slice(i + 1, tailEnd);
      const tailOk = [...tail].every(isDigit) && (tailEnd >= s.length || !isDigit(s[tailEnd]));
      if (tailOk) {
        const f = check(run, sep, tail, referenceYear);
        if (f) found = { ...f, end: tailEnd };
      }
    }
    if (found) {
      out.push({ start, end: found.end, kind: found.kind, canonical: found.canonical });
      i = found.end;
    }
  }
  return out;
}

/** True when `text` holds a personnummer or samordningsnummer. */
export function hasPersonnummer(text, referenceYear) {
  return findPersonnummer(text, referenceYear).length > 0;
}
