// Catch2 main for the project's test programs.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
