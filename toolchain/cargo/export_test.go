package cargo

// ExtractCrate is extractCrate, for the external tests.
var ExtractCrate = extractCrate
