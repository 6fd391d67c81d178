module.exports = "linked";
