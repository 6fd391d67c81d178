module.exports = "localpkg";
