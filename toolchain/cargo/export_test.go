package cargo

// ExtractCrate is extractCrate, for the external tests.
var ExtractCrate = extractCrate

// ReadCrate is readCrate, for the external tests.
var ReadCrate = readCrate
