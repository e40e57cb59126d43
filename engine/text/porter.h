// The Porter stemmer exactly as NLTK's PorterStemmer() in its default NLTK_EXTENSIONS
// mode (NLTK 3.x): the irregular-forms pool (sky/skies, dying, lying, tying, news,
// innings, outings, cannings, howe, proceed, exceed, succeed), words of one or two
// characters returned unchanged, and NLTK's departures in steps 1a, 1b, 1c, 2 and the
// two-letter *o condition. rouge-score stems with it, so ROUGE with stemming depends on
// every one of these details.
//
// Words are bytes: a-z are letters, anything else (digits, non-ASCII bytes) counts as a
// consonant, as NLTK treats any character that is not a vowel or 'y'.
#ifndef LB_PORTER_H
#define LB_PORTER_H

#include <stddef.h>

// Stems the NUL-terminated word into out (outsz must be at least strlen(word) + 1: a stem
// is never longer than its word). Like NLTK's stem(word), ASCII upper case is lowered
// first, and the irregular-forms pool is consulted only when the word was already lower
// case (NLTK looks the original word up, so "Sky" stems to "ski" but "sky" to "sky").
// Returns the stem's length, or -1 when out is too small (out is then left empty).
int porter_stem(const char *word, char *out, size_t outsz);

// Stems the lower-case word w[0..len) in place and returns the stem's length (<= len);
// the bytes after the stem are left as they are and nothing is NUL-terminated. This is
// the allocation-free form the ROUGE tokenizer uses on each token.
size_t porter_stem_inplace(char *w, size_t len);

#endif
