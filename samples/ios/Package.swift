// swift-tools-version:5.10
// A minimal SwiftUI app that chats with an edgekit iOS bundle: Core ML stateful prediction + swift-transformers'
// Tokenizers. Open this folder in Xcode (File > Open... Package.swift) and run on an iOS 18 device or macOS 15.
import PackageDescription

let package = Package(
    name: "EdgekitSample",
    platforms: [.iOS(.v18), .macOS(.v15)],  // Core ML states (MLState) need iOS 18 / macOS 15: manifest target.min_os
    dependencies: [
        .package(url: "https://github.com/huggingface/swift-transformers", from: "1.0.0"),
    ],
    targets: [
        .executableTarget(
            name: "EdgekitSample",
            dependencies: [.product(name: "Tokenizers", package: "swift-transformers")]
        ),
    ]
)
