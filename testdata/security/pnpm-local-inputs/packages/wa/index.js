module.exports = "wa";
