// SPDX-License-Identifier: MIT
// Placeholder: one model serving many users' prefixes (being written).
int main() { return 0; }
