import SwiftUI

/// Copy a bundle folder into the app's Documents as "bundle" (Files app / Finder), then ask away.
@main
struct EdgekitSampleApp: App {
    var body: some Scene { WindowGroup { ChatView() } }
}

struct ChatView: View {
    @State private var runner: BundleRunner?
    @State private var status = "loading the bundle..."
    @State private var question = ""
    @State private var transcript = ""

    var body: some View {
        VStack(alignment: .leading) {
            Text(status).font(.caption)
            ScrollView { Text(transcript).frame(maxWidth: .infinity, alignment: .leading) }
            HStack {
                TextField("Ask something", text: $question)
                Button("Send") { send() }.disabled(runner == nil || question.isEmpty)
            }
        }
        .padding()
        .task {
            let folder = URL.documentsDirectory.appending(path: "bundle")
            do {
                let r = try await BundleRunner(folder: folder)
                runner = r
                status = "\(r.manifest.string("model.name")) · \(r.manifest.string("quant")) · "
                    + "min OS \(r.manifest.string("target.min_os"))"
            } catch {
                status = "could not load \(folder.path): \(error)"
            }
        }
    }

    private func send() {
        guard let runner else { return }
        let q = question
        question = ""
        transcript += "\n> \(q)\n"
        Task.detached {
            do {
                try runner.chat(q) { piece in Task { @MainActor in transcript += piece } }
            } catch {
                await MainActor.run { transcript += "\n[error: \(error)]" }
            }
        }
    }
}
