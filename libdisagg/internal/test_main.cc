// Catch2 main for the project's test programs. Wide lines: Catch 2.13's console reporter
// aborts (a TextFlow assertion) printing a failure of a test whose long name has a colon
// in it, at its default width of 80, and the failure is lost.
#define CATCH_CONFIG_CONSOLE_WIDTH 200
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
